"""What the demo does with the shop, and what it expects to see in the journal.

Three orders go in, one of them twice under the same idempotency key, one of
them with a card that is declined. The two that are paid sleep, then wait for
a reviewer's decision, sent as an "approval" event: the first is approved and
ships, the second is rejected and refunded. Then the first order is returned.
Every expectation is checked against the runs' recorded events, so a wrong
outcome makes the demo fail instead of printing a pleasant but untrue story.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery_durable import ResultTimeoutError, RunHandle

from ..services import DECLINED_CARD, PaymentDeclined
from .errors import DemoError

ORDERS: list[dict[str, Any]] = [
    {
        "id": 1001,
        "email": "ada@example.com",
        "address": "12 Analytical Row, London",
        "card": "4242424242424242",
        "items": [
            {"sku": "KEYBOARD-01", "qty": 1, "price_cents": 8900},
            {"sku": "MOUSE-02", "qty": 2, "price_cents": 2500},
        ],
    },
    {
        "id": 1002,
        "email": "alan@example.com",
        "address": "1 Bletchley Park, Milton Keynes",
        "card": "5555555555554444",
        "items": [{"sku": "MONITOR-27", "qty": 1, "price_cents": 32900}],
    },
    {
        "id": 1003,
        "email": "grace@example.com",
        "address": "7 Harbor Street, Arlington",
        "card": DECLINED_CARD,
        "items": [{"sku": "LAPTOP-14", "qty": 1, "price_cents": 149900}],
    },
]

REVIEW_SLEEP_SECONDS = 2.0  # process_order's sleep("2s")
REVIEWER = "maria (ops)"
# What the reviewer decides for each paid order: the payload of its "approval" event.
DECISIONS: dict[int, dict[str, Any]] = {
    1001: {"approved": True, "by": REVIEWER},
    1002: {"approved": False, "by": REVIEWER, "reason": "shipping address could not be verified"},
}
FINAL = frozenset({"completed", "failed", "cancelled", "timed_out"})


@dataclass
class Tracked:
    """A run the demo started, what it must end as, and how it did end."""

    label: str
    run: RunHandle
    expect: str
    check: Callable[[Tracked], list[str]]
    decision: dict[str, Any] | None = None  # the approval event to send, if it waits for one
    outcome: Any = None
    error: BaseException | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def watch(
    tracked: list[Tracked],
    ready: Callable[[Tracked, str], bool],
    timeout: float,
    show: Callable[[str], None],
) -> None:
    """Poll the runs' statuses, showing each change, until `ready` holds for all of them.

    A run that ends (completed, failed...) counts as ready: what it ended as
    is checked later, and the demo must not hang on a run that will not wait.
    """
    began = time.monotonic()
    deadline = began + timeout
    last: dict[str, str] = {}
    while True:
        pending = []
        for item in tracked:
            status = item.run.status()
            if last.get(item.run.id) != status:
                last[item.run.id] = status
                show(f"  {time.monotonic() - began:>5.1f} s  {item.label}  {status}")
            if status not in FINAL and not ready(item, status):
                pending.append(f"{item.label} is {status}")
        if not pending:
            return
        if time.monotonic() > deadline:
            raise DemoError(f"after {timeout:.0f} s: " + "; ".join(pending))
        time.sleep(0.05)


def wait_all(tracked: list[Tracked], timeout: float) -> None:
    """Wait for every run to end, all within one deadline."""
    deadline = time.monotonic() + timeout
    for item in tracked:
        remaining = max(deadline - time.monotonic(), 0.001)
        try:
            item.outcome = item.run.result(timeout=remaining)
        except ResultTimeoutError:
            raise DemoError(
                f"{item.label}: run {item.run.id} is still {item.run.status()} "
                f"after {timeout:.0f} s (see the worker's log below)"
            ) from None
        except Exception as exc:  # the run failed and result() raised its error: keep it
            item.error = exc
        item.events = item.run.events()


def verify(item: Tracked) -> list[str]:
    """Every problem with a finished run; empty when it ended as expected."""
    problems = []
    status = item.run.status()
    if status != item.expect:
        problems.append(f"{item.label}: run {item.run.id} is {status}, expected {item.expect}")
    positions = [e["data"]["position"] for e in item.events if e["type"] == "step.completed"]
    if len(positions) != len(set(positions)):
        problems.append(f"{item.label}: a step was recorded as completed twice")
    return problems + [f"{item.label}: {p}" for p in item.check(item)]


def _steps(events: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == kind and e["data"]["name"] == name]


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def _received(events: list[dict[str, Any]], name: str) -> list[Any]:
    return [
        e["data"]["payload"]
        for e in events
        if e["type"] == "event.received" and e["data"]["name"] == name
    ]


def _check_review(item: Tracked) -> list[str]:
    """The run slept (suspended, no worker held), waited for approval, got the decision."""
    problems = []
    sleeps = [e["data"] for e in item.events if e["type"] == "sleep.started"]
    if [s["seconds"] for s in sleeps] != [REVIEW_SLEEP_SECONDS]:
        problems.append(f"expected one durable sleep of {REVIEW_SLEEP_SECONDS:g} s, got {sleeps}")
    suspended = [e["data"]["status"] for e in item.events if e["type"] == "workflow.suspended"]
    if suspended != ["sleeping", "waiting"]:
        problems.append(f"expected the run to suspend sleeping then waiting, got {suspended}")
    if _received(item.events, "approval") != [item.decision]:
        problems.append(
            f"expected the approval event {item.decision} to be received once, "
            f"got {_received(item.events, 'approval')}"
        )
    return problems


def check_approved_order(item: Tracked) -> list[str]:
    """The gateway's first-call timeout was retried, the order was approved and shipped."""
    problems = _check_review(item)
    retries = _steps(item.events, "step.retrying", "charge")
    charged = _steps(item.events, "step.completed", "charge")
    if [r["attempt"] for r in retries] != [1] or [c["attempt"] for c in charged] != [2]:
        problems.append("expected charge to fail once (gateway timeout) and succeed on attempt 2")
    if not _steps(item.events, "step.completed", "ship"):
        problems.append("the order was not shipped")
    if not _steps(item.events, "step.completed", "queue_receipt"):
        problems.append("the receipt email was not queued")
    outcome = item.outcome if isinstance(item.outcome, dict) else {}
    if outcome.get("status") != "shipped" or not outcome.get("tracking"):
        problems.append(f"result() returned {item.outcome!r}, expected a shipped order")
    return problems


def check_rejected_order(item: Tracked) -> list[str]:
    """The reviewer's rejection refunded the charge and released the stock; nothing shipped."""
    problems = _check_review(item)
    for name in ("charge", "refund", "release_stock"):
        if len(_steps(item.events, "step.completed", name)) != 1:
            problems.append(f"expected step {name} to complete once")
    if _steps(item.events, "step.completed", "ship"):
        problems.append("a rejected order was shipped")
    outcome = item.outcome if isinstance(item.outcome, dict) else {}
    reason = (item.decision or {}).get("reason")
    if outcome.get("status") != "rejected" or outcome.get("reason") != reason:
        problems.append(f"result() returned {item.outcome!r}, expected rejected ({reason})")
    return problems


def check_declined_order(item: Tracked) -> list[str]:
    """The decline failed the run at once (no retries) and the stock was given back."""
    problems = []
    if _steps(item.events, "step.retrying", "charge"):
        problems.append("a declined card was retried; PaymentDeclined is a FatalError")
    if [f["attempt"] for f in _steps(item.events, "step.failed", "charge")] != [1]:
        problems.append("expected charge to fail once, on attempt 1")
    if not _steps(item.events, "step.completed", "release_stock"):
        problems.append("the reserved stock was not released")
    if not isinstance(item.error, PaymentDeclined):
        problems.append(f"result() raised {item.error!r}, expected PaymentDeclined")
    if {"sleep.started", "event.waiting"} & set(_types(item.events)):
        problems.append("a run whose payment failed went on to sleep or wait for approval")
    return problems


def check_return(item: Tracked) -> list[str]:
    """The refund and the restock were both recorded."""
    problems = []
    for name in ("refund", "restock", "notify"):
        if len(_steps(item.events, "step.completed", name)) != 1:
            problems.append(f"expected step {name} to complete once")
    if not isinstance(item.outcome, dict) or not item.outcome.get("refund"):
        problems.append(f"result() returned {item.outcome!r}, expected a refund")
    return problems


def check_deduplicated(first: RunHandle, again: RunHandle) -> list[str]:
    """Two starts with one idempotency key: one run, started once, never executed twice at once.

    A run executes once per stretch between suspensions: its first execution,
    then one after the sleep and one after the approval event.
    """
    if again.id != first.id:
        return [f"the same idempotency key gave two runs: {first.id} and {again.id}"]
    kinds = _types(first.events())
    executions = kinds.count("workflow.executing")
    if kinds.count("workflow.started") != 1 or executions != kinds.count("workflow.suspended") + 1:
        return [f"run {first.id} was started or executed more than once: {kinds}"]
    return []
