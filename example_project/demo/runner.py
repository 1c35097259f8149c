"""The demo's story, in order: Redis, Slack, worker, runs, approvals, rules, shutdown."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shlex
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from celery.bin.celery import celery as celery_command
from kombu.utils.url import maybe_sanitize_url

import celery_durable
from celery_durable.contrib.redis_server import redis_url
from celery_durable.contrib.workers import WorkerProcess, WorkerProcessError

from ..celery import RULES_PATH, use_redis, use_slack_url
from ..plugins import AUDIT_KEY
from ..services import DECLINED_CARD
from ..workflows import ReturnOrder, process_order
from .automation import RETRY_RULE, SLACK_RULE, Automation, wait_for_automation
from .errors import DemoError
from .scenario import (
    DECISIONS,
    ORDERS,
    Tracked,
    check_approved_order,
    check_declined_order,
    check_deduplicated,
    check_rejected_order,
    check_return,
    verify,
    wait_all,
    watch,
)
from .slack import SlackReceiver

# The directory that holds the example_project package: the worker's cwd, so
# that `-A example_project` imports this very code.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT = 30.0
RUNS_TIMEOUT = 30.0
WAITING_TIMEOUT = 30.0
RULES_TIMEOUT = 20.0

_output = threading.RLock()  # the Slack receiver prints from its own thread


def say(text: str = "") -> None:
    with _output:
        sys.stdout.write(f"{text}\n")
        sys.stdout.flush()


def main() -> int:
    """Run the demo; 0 if everything went as expected, else 1 with the reason on stderr."""
    began = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)
    # Slack messages hold emoji: never fail on a terminal that cannot show them.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    try:
        summary = run_demo(began)
    except (DemoError, WorkerProcessError) as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception:
        traceback.print_exc()
        print("\ndemo FAILED: unexpected error (traceback above)", file=sys.stderr, flush=True)
        return 1
    say("\nsummary")
    for text in summary:
        say(f"  {text}")
    say(f"\ndemo OK in {time.monotonic() - began:.1f} s")
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so the worker and Redis are still stopped."""
    raise KeyboardInterrupt


def run_demo(began: float) -> list[str]:
    """Redis, Slack, then the worker, then the runs; everything stopped in reverse order."""
    with ExitStack() as stack:
        url = _redis(stack)
        use_redis(url)
        slack = stack.enter_context(SlackReceiver(say))
        # The worker reads DEMO_SLACK_URL when it loads rules.yaml; so does this process.
        use_slack_url(slack.webhook_url)
        say(f"slack: a stand-in for a Slack incoming webhook at {slack.webhook_url}")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="durable-demo-")))
        worker = WorkerProcess(
            url,
            workdir / "worker.log",
            app="example_project",
            concurrency=2,
            name=f"demo-{os.getpid()}",  # our own, so that a ping asks this worker only
            env={"DEMO_SLACK_URL": slack.webhook_url},
            url_env="DURABLE_REDIS_URL",
            cwd=PROJECT_ROOT,
        )
        stack.enter_context(worker)
        say(f"worker pid {worker.pid}: celery -A example_project worker (log {worker.log_path})")
        try:
            line = worker.wait_ready(timeout=WORKER_READY_TIMEOUT)
            if f"journal at {maybe_sanitize_url(url)} " not in line:
                raise DemoError(f"the worker's journal is not at {maybe_sanitize_url(url)}: {line}")
            say(f"worker ready after {time.monotonic() - began:.1f} s: {line}")
            rules = [rule["name"] for rule in celery_durable.list_rules()]
            say(f"\nautomation rules: {len(rules)} loaded from {RULES_PATH.name}: {rules}")
            summary = play(batch=secrets.token_hex(3), slack=slack)
            say("\nshutting down")
            exit_code = worker.stop(timeout=15)
        except Exception:
            # Something went wrong while it ran: its log is the first place to look.
            print(worker.tail(30), file=sys.stderr)
            raise
    say(f"  worker stopped with exit code {exit_code}; none of its processes is left")
    if exit_code != 0:
        raise DemoError(f"the worker exited with code {exit_code} on SIGTERM")
    return summary


def _redis(stack: ExitStack) -> str:
    """The Redis from the environment, else a private redis-server stopped on exit."""
    given = os.environ.get("DURABLE_REDIS_URL") or os.environ.get("REDIS_URL")
    url = stack.enter_context(redis_url(given))
    if not given:
        say(f"redis: private redis-server at {url}")
        return url
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise DemoError(f"cannot reach the Redis at {maybe_sanitize_url(url)}: {exc}") from None
    finally:
        client.close()
    say(f"redis: {maybe_sanitize_url(url)} (from the environment)")
    return url


def show_command(*args: str) -> None:
    """Print what `celery -A example_project durable <args>` prints: the operator's view."""
    out = io.StringIO()
    with _output:  # the Slack receiver's lines wait, rather than land in `out`
        with contextlib.redirect_stdout(out):
            command = ["-A", "example_project", "durable", *args]
            celery_command.main(command, prog_name="celery", standalone_mode=False)
        say(f"$ celery -A example_project durable {shlex.join(args)}")
        for line in out.getvalue().splitlines():
            say(f"  {line}".rstrip())


def play(batch: str, slack: SlackReceiver) -> list[str]:
    """Start the runs, approve or reject, wait, print their accounts; return the summary.

    Idempotency keys carry `batch`, so running the demo again against a
    long-lived Redis starts new runs instead of finding the last demo's.
    """
    say(f"\nstarting orders (batch {batch})")
    orders = [_start_order(order, batch) for order in ORDERS]
    # A client that timed out and submits again: the same key finds the same run.
    first = orders[0]
    again = process_order.start(ORDERS[0], idempotency_key=_order_key(ORDERS[0], batch))
    say(f"  {first.label}  started again with the same key: run {again.id}")

    say("\nwatching the runs: paid orders sleep 2 s (no worker held), then wait for approval")
    watch(
        orders,
        lambda item, status: status == "waiting" or item.decision is None,
        WAITING_TIMEOUT,
        say,
    )
    approve(orders)
    wait_all(orders, timeout=RUNS_TIMEOUT)

    tracked = list(orders)
    problems = check_deduplicated(first.run, again)
    if isinstance(first.outcome, dict) and first.outcome.get("charge"):
        say(f"\nreturning {first.label} (the class-form workflow ReturnOrder)")
        run = ReturnOrder.start(
            ORDERS[0], first.outcome["charge"], idempotency_key=f"return-{ORDERS[0]['id']}/{batch}"
        )
        returned = Tracked(f"return of {first.label}", run, "completed", check_return)
        say(f"  return      started run {run.id}")
        wait_all([returned], timeout=RUNS_TIMEOUT)
        tracked.append(returned)
    else:
        problems.append(f"{first.label} did not complete, so it could not be returned")

    shipped = first.outcome if isinstance(first.outcome, dict) else {}
    automation = Automation(
        receipt_task=shipped.get("receipt_task"),
        reference=first.run.id,
        failed_runs=[item.run.id for item in orders if item.expect == "failed"],
    )
    say("\nwaiting for the automation rules (receipt email retries, Slack alert)")
    if not wait_for_automation(automation, slack, timeout=RULES_TIMEOUT):
        problems.append(f"the rules had not done everything after {RULES_TIMEOUT:.0f} s")

    for item in tracked:
        raised = f": result() raised {_qualname(item.error)}" if item.error else ""
        say(f"\n{item.label}{raised}")
        show_command("runs", "show", item.run.id)
    show_automation(automation)

    for item in tracked:
        problems += verify(item)
    problems += automation.problems()
    if problems:
        raise DemoError("things did not end as expected:\n  " + "\n  ".join(problems))
    return _summary(tracked, first, automation)


def approve(orders: list[Tracked]) -> None:
    """The reviewer's decisions, sent as "approval" events to the waiting runs."""
    say("\nreviewer decisions, sent with celery_durable.send_event(run.id, 'approval', payload)")
    for item in orders:
        if item.decision is None or item.run.status() != "waiting":
            continue
        celery_durable.send_event(item.run.id, "approval", item.decision)
        verdict = "approved" if item.decision.get("approved") else "rejected"
        say(f"  {item.label}  {verdict}: {item.decision}")


def show_automation(automation: Automation) -> None:
    say("\nwhat the rules did")
    show_command("rules", "list")
    for name in (RETRY_RULE, SLACK_RULE):
        show_command("rules", "history", name)

    say("\nretries made by the rules (celery_durable.retry_chain(task_id))")
    for n, task_id in enumerate(automation.chain):
        what = "the original task" if n == 0 else f"retry {n}"
        sent = automation.sent and automation.sent.get("task_id") == task_id
        say(f"  {n + 1}. {task_id}  {what}" + ("  sent the receipt" if sent else ""))

    say("\nslack messages received (by the stand-in at DEMO_SLACK_URL)")
    for message in automation.slack:
        say(f"  {message.shown}")
    say(f"\naudit log written by the audit_log plugin action (Redis list {AUDIT_KEY})")
    for line in automation.audit:
        say(f"  {line}")


def _qualname(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}"


def _order_key(order: dict[str, Any], batch: str) -> str:
    return f"order-{order['id']}/{batch}"


def _start_order(order: dict[str, Any], batch: str) -> Tracked:
    declined = order["card"] == DECLINED_CARD
    run = process_order.start(order, idempotency_key=_order_key(order, batch))
    note = "  (its card will be declined)" if declined else ""
    say(f"  order {order['id']}  started run {run.id}{note}")
    label = f"order {order['id']}"
    if declined:
        return Tracked(label, run, "failed", check_declined_order)
    decision = DECISIONS[order["id"]]
    check = check_approved_order if decision.get("approved") else check_rejected_order
    return Tracked(label, run, "completed", check, decision=decision)


def _summary(tracked: list[Tracked], deduplicated: Tracked, automation: Automation) -> list[str]:
    statuses = Counter(item.run.status() for item in tracked)
    events = [e for item in tracked for e in item.events]
    retries = sum(e["type"] == "step.retrying" for e in events)
    steps = sum(e["type"] == "step.completed" for e in events)
    declined = [item for item in tracked if item.expect == "failed"]
    reviewed = [item for item in tracked if item.decision is not None]
    decisions = "; ".join(
        f"{item.label} approved by {item.decision['by']}"
        if item.decision.get("approved")
        else f"{item.label} rejected ({item.decision.get('reason')}), refunded"
        for item in reviewed
    )
    fired = automation.fired()
    retries_made = len(automation.chain) - 1
    audit_lines = len(automation.audit)
    return [
        f"runs: {len(tracked)} ("
        + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        + "), each as expected",
        f"deduplication: {deduplicated.label} started 2 times -> 1 run "
        f"({deduplicated.run.id}), recorded once",
        f"durable waits: {len(reviewed)} runs slept 2 s and waited for approval, holding no worker",
        f"approval: {decisions}",
        f"steps: {steps} completed, each recorded once; {retries} failed attempts retried "
        "by their step's policy (the gateway's first-call timeouts)",
        *(
            f"declined card: {item.label} failed with PaymentDeclined, its stock released"
            for item in declined
        ),
        f"rules fired: {sum(fired.values())} ("
        + ", ".join(f"{name}: {n}" for name, n in fired.items())
        + "), every action succeeded",
        f"retries made: send_receipt_email of {deduplicated.label} retried {retries_made} "
        f"times by rule {RETRY_RULE!r}, sent on try {retries_made + 1}",
        f"slack message received: {len(automation.slack)} from rule {SLACK_RULE!r} "
        f"({', '.join(item.label for item in declined)} failed)",
        f"plugin action ran: audit_log appended {audit_lines} lines to {AUDIT_KEY}",
    ]
