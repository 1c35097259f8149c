"""What the automation rules did during the demo, read back and checked.

Everything comes from celery_durable's own records and the shop's: the rules
from `list_rules()`, what each did from `rule_history(name)`, the retries from
`retry_chain(task_id)`, plus the emails the mail relay accepted, the lines the
`audit_log` plugin action wrote, and the messages the Slack receiver got.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import celery_durable

from ..celery import shop_redis
from ..plugins import AUDIT_KEY
from ..services import RECEIPT_REFUSALS
from ..tasks import SENT_MAIL_KEY
from .slack import SlackMessage, SlackReceiver

# The rules of rules.yaml the demo expects to see fire.
RETRY_RULE = "Retry receipt emails on network errors"
SLACK_RULE = "Tell Slack about failed orders"


@dataclass
class Automation:
    """What the rules did for this demo's runs (nothing from earlier demos)."""

    receipt_task: str | None  # the receipt email task the approved order queued
    reference: str  # its run id, which the email task records when it is sent
    failed_runs: list[str]  # runs that must be reported to Slack
    rules: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    chain: list[str] = field(default_factory=list)
    sent: dict[str, Any] | None = None
    slack: list[SlackMessage] = field(default_factory=list)
    audit: list[str] = field(default_factory=list)

    def refresh(self, receiver: SlackReceiver) -> None:
        self.rules = celery_durable.list_rules()
        loaded = {rule["name"] for rule in self.rules}
        if self.receipt_task:
            self.chain = celery_durable.retry_chain(self.receipt_task)
        ours = set(self.chain) | set(self.failed_runs)
        self.history = {
            name: [e for e in celery_durable.rule_history(name) if _about(e) in ours]
            for name in (RETRY_RULE, SLACK_RULE)
            if name in loaded
        }
        redis = shop_redis()
        sent = [json.loads(raw) for raw in redis.lrange(SENT_MAIL_KEY, -200, -1)]
        self.sent = next((s for s in sent if s.get("reference") == self.reference), None)
        self.slack = [m for m in receiver.messages() if any(r in m.text for r in self.failed_runs)]
        ids = [*self.chain, *self.failed_runs]
        self.audit = [
            line for line in redis.lrange(AUDIT_KEY, -200, -1) if any(i in line for i in ids)
        ]

    def complete(self) -> bool:
        """Everything the rules should do has been done (checked for detail by `problems`)."""
        return (
            self.sent is not None
            and len(self.history.get(RETRY_RULE, [])) >= RECEIPT_REFUSALS
            and len(self.history.get(SLACK_RULE, [])) >= len(self.failed_runs)
            and len(self.slack) >= len(self.failed_runs)
            and len(self.audit) >= RECEIPT_REFUSALS + len(self.failed_runs)
        )

    def fired(self) -> dict[str, int]:
        return {name: len(entries) for name, entries in self.history.items()}

    def problems(self) -> list[str]:
        found = []
        loaded = {rule["name"]: rule for rule in self.rules}
        for name in (RETRY_RULE, SLACK_RULE):
            if name not in loaded:
                found.append(f"rule {name!r} is not loaded (see rules.yaml)")
            elif not loaded[name]["enabled"]:
                found.append(f"rule {name!r} is disabled")
        found += self._retry_problems() + self._slack_problems()
        expected = RECEIPT_REFUSALS + len(self.failed_runs)
        if len(self.audit) != expected:
            found.append(
                f"the audit_log action wrote {len(self.audit)} line(s), expected {expected}"
            )
        for name, entries in self.history.items():
            for entry in entries:
                if entry.get("outcome") != "success":
                    found.append(f"rule {name!r}: an execution ended {entry.get('outcome')}")
                if "audit_log" not in [a.get("type") for a in entry.get("actions", [])]:
                    found.append(f"rule {name!r}: an execution did not run audit_log")
        return found

    def _retry_problems(self) -> list[str]:
        if not self.receipt_task:
            return ["the approved order queued no receipt email, so no retry could be seen"]
        found = []
        retries = len(self.chain) - 1
        if retries != RECEIPT_REFUSALS:
            found.append(
                f"retry_chain({self.receipt_task}) has {retries} retries, expected "
                f"{RECEIPT_REFUSALS} (the mail relay refuses each receipt's first "
                f"{RECEIPT_REFUSALS} tries)"
            )
        made = [
            a["result"]["task_id"]
            for e in sorted(self.history.get(RETRY_RULE, []), key=lambda e: e["ts"])
            for a in e.get("actions", [])
            if a.get("type") == "retry" and a.get("ok") and isinstance(a.get("result"), dict)
        ]
        if made != self.chain[1:]:
            found.append(f"the retry rule's history sent {made}, the chain is {self.chain[1:]}")
        if self.sent is None:
            found.append("the receipt email was never sent")
        elif self.sent.get("task_id") != self.chain[-1]:
            found.append(
                f"the receipt was sent by task {self.sent.get('task_id')}, "
                f"not by the last of the chain {self.chain}"
            )
        return found

    def _slack_problems(self) -> list[str]:
        found = []
        for run_id in self.failed_runs:
            got = [m for m in self.slack if run_id in m.text]
            if len(got) != 1:
                found.append(f"Slack got {len(got)} message(s) about failed run {run_id}, not 1")
        return found


def _about(entry: dict[str, Any]) -> str:
    """The task id or run id a history entry's event concerns."""
    data = (entry.get("event") or {}).get("data") or {}
    return str(data.get("task_id") or data.get("run_id") or "")


def wait_for_automation(automation: Automation, receiver: SlackReceiver, timeout: float) -> bool:
    """Refresh until the rules have done everything expected; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        automation.refresh(receiver)
        if automation.complete():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
