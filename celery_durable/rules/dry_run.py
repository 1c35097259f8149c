"""What a rule would do, without doing it; and a test of its notifications.

`dry_run()` evaluates one rule against an event (a dict, or a past task's
event found in the global stream by its task id): whether it would fire,
each condition and why, the breaker's state, and each action rendered. It
writes nothing: no failure is counted, no breaker execution recorded, no
job queued. `send_test_notification()` is the explicit opposite: it runs the
rule's notification actions (slack, webhook, and plugin actions marked
`notification`) once, now, with sample data, so a user sees the message
arrive before enabling the rule.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from ..activity import Activity
from ..codec import unpackb
from ..errors import ConfigurationError, DurableError, RulesError
from ..extension import extension_for
from .context import RuleContext
from .engine import rule_engine
from .loader import build_rule
from .model import Rule

SCAN_LIMIT = 10_000


@dataclass
class DryRunReport:
    rule: str
    would_fire: bool
    enabled: bool
    event: dict[str, Any]
    conditions: list[dict[str, Any]] = field(default_factory=list)
    breaker: dict[str, Any] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def dry_run(
    rule_name: str | Mapping[str, Any],
    event: dict[str, Any] | None = None,
    *,
    task_id: str | None = None,
    app: Celery | None = None,
) -> DryRunReport:
    """Would `rule_name` fire for `event` (or the last event of `task_id`)?

    `rule_name` may also be a rule not saved yet (a mapping, as `save_rules`
    takes it): an editor tries a rule before storing it. Its problems raise
    `RulesError`, as `save_rules` would.
    """
    ext = extension_for(app)
    rule = _rule(ext, rule_name)
    if (event is None) == (task_id is None):
        raise ConfigurationError("dry_run(): give either an event or a task_id")
    activity = _event(event) if event is not None else find_task_event(ext, task_id or "")
    context = RuleContext(ext, rule.name, dry_run=True)
    report = DryRunReport(
        rule=rule.name, would_fire=False, enabled=rule.enabled, event=activity.as_dict()
    )
    if not rule.trigger.matches(activity):
        report.reason = (
            f"the rule's trigger ({rule.event}) does not match this {activity.type} event"
        )
        return report
    engine = rule_engine(ext)
    report.conditions = engine.explain(rule, activity, context)
    report.breaker = engine.breakers.peek(rule).as_dict()
    report.actions = [action.preview(activity, context) for action in rule.actions]
    enabled = engine.is_enabled(rule)
    holds = all(c["holds"] for c in report.conditions)
    closed = report.breaker["state"] == "closed"
    report.enabled = enabled
    report.would_fire = enabled and holds and closed
    if not enabled:
        report.reason = "the rule is disabled"
    elif not holds:
        failed = [c["condition"] for c in report.conditions if not c["holds"]]
        report.reason = f"condition(s) not met: {', '.join(failed)}"
    elif not closed:
        report.reason = "the circuit breaker is open: a notification would be sent instead"
    return report


def send_test_notification(
    rule_name: str | Mapping[str, Any], *, app: Celery | None = None
) -> list[dict[str, Any]]:
    """Run the rule's notification actions once, now, with sample data.

    `rule_name` may be a rule not saved yet (a mapping), as for `dry_run`.
    """
    ext = extension_for(app)
    rule = _rule(ext, rule_name)
    actions = [a for a in (*rule.actions, rule.breaker.notify) if a and a.notification]
    if not actions:
        raise ConfigurationError(f"rule {rule.name!r} has no notification action to test")
    event = sample_event(rule)
    context = RuleContext(ext, rule.name, execution_id="test-notification")
    results = []
    for action in actions:
        try:
            results.append({"type": action.name, "ok": True, "result": action.run(event, context)})
        except Exception as exc:
            results.append({"type": action.name, "ok": False, "error": action.describe_error(exc)})
    return results


def sample_event(rule: Rule) -> Activity:
    return Activity(
        type=rule.event,
        data={
            "task_id": "00000000-test-notification",
            "task_name": "example.tasks.sample",
            "worker": "celery@example",
            "queue": "default",
            "error_type": "ConnectionError",
            "error_message": "this is a test notification from celery_durable",
            "args_repr": "(42,)",
            "workflow_name": "example_workflow",
            "run_id": "sample-run",
            "retry": {"attempt": 0},
            "threshold_seconds": getattr(rule.trigger, "threshold_seconds", None),
        },
    )


def find_task_event(ext: Any, task_id: str) -> Activity:
    """The newest task event about `task_id` in the global stream."""
    scanned, top = 0, "+"
    while scanned < SCAN_LIMIT:
        entries = ext.redis.xrevrange(ext.keys.events(), max=top, min="-", count=500)
        if not entries:
            break
        for entry_id, fields in entries:
            body = unpackb(fields[b"e"])
            if (body.get("data") or {}).get("task_id") == task_id:
                return Activity(type=body["type"], data=body["data"], ts=body["ts"])
            top = f"({entry_id.decode()}"
        scanned += len(entries)
    raise DurableError(
        f"no event about task {task_id!r} in the last {scanned} events of the global stream"
    )


def _rule(ext: Any, name: str | Mapping[str, Any]) -> Rule:
    if isinstance(name, Mapping):
        from .api import SAVE_SOURCE, validate_rules

        problems = validate_rules(name, app=ext.app)
        if problems:
            raise RulesError(problems, SAVE_SOURCE)
        return build_rule(dict(name), rule_engine(ext).registry)
    rules = rule_engine(ext).refresh(force=True).by_name  # stored rules as they are now
    rule = rules.get(name)
    if rule is None:
        known = ", ".join(sorted(rules)) or "none"
        raise ConfigurationError(f"no rule named {name!r}; loaded rules: {known}")
    return rule


def _event(raw: dict[str, Any]) -> Activity:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ConfigurationError(
            "an event is a mapping with a `type` (task.failed, ...) and its `data`"
        )
    data = raw.get("data", {k: v for k, v in raw.items() if k not in ("type", "ts")})
    return Activity(type=raw["type"], data=dict(data), ts=float(raw.get("ts", time.time())))
