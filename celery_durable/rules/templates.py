"""Ready-made rules for the common cases, used as `template: <name>`.

A rule that names a template starts from it and overrides it field by field:
mappings merge key by key (so `trigger.conditions.queue` can be added to a
template's conditions), lists of mappings merge item by item (so
`actions: [{webhook_url: ...}]` fills in the template's first action), and
anything else replaces the template's value. Templates leave out what only
the user can know (a Slack webhook URL): a rule must give it, or it is
refused at load like any rule with a missing parameter.
"""

from __future__ import annotations

import copy
from typing import Any

TEMPLATES: dict[str, dict[str, Any]] = {
    "auto-retry-network": {
        "description": "Retry tasks that failed on a transient network error, with backoff.",
        "trigger": {
            "event": "task.failed",
            "conditions": {
                "error_pattern": (
                    r"ConnectionError|ConnectTimeout|ReadTimeout|TimeoutError|Timeout|"
                    r"ConnectionResetError|ConnectionRefusedError|BrokenPipeError|"
                    r"TemporaryFailure|ServiceUnavailable|\b50[234]\b"
                ),
            },
        },
        "actions": [
            {
                "type": "retry",
                "delay_seconds": 10,
                "max_attempts": 5,
                "exponential_backoff": True,
                "backoff_multiplier": 2,
                "max_delay_seconds": 300,
            }
        ],
        "circuit_breaker": {"max_executions": 100, "time_window_hours": 1},
    },
    "critical-task-alert": {
        "description": "Tell Slack when a critical task fails (set webhook_url and the pattern).",
        "trigger": {"event": "task.failed", "conditions": {"task_name_pattern": "*.critical.*"}},
        "actions": [
            {
                "type": "slack",
                "message": (
                    ":rotating_light: {task_name} failed on {worker} "
                    "(queue {queue}): {error_message}"
                ),
            }
        ],
        "circuit_breaker": {"max_executions": 20, "time_window_hours": 1},
    },
    "recover-orphaned-tasks": {
        "description": "Re-send the tasks a dead worker held, exactly as they were sent.",
        "trigger": {"event": "task.orphaned"},
        "actions": [{"type": "retry", "delay_seconds": 0, "max_attempts": 3}],
        "circuit_breaker": {"max_executions": 1000, "time_window_hours": 1},
    },
    "escalate-repeated-failures": {
        "description": "Escalate from the Nth failure of a task within an hour.",
        "trigger": {
            "event": "task.failed",
            "conditions": {"failure_count_threshold": 5},
        },
        "actions": [
            {
                "type": "webhook",
                "timeout": 10,
                "retries": 3,
            }
        ],
        "circuit_breaker": {"max_executions": 10, "time_window_hours": 1},
    },
}


def apply_template(spec: dict[str, Any]) -> dict[str, Any]:
    """The rule with its template's fields underneath; KeyError for an unknown one."""
    name = spec.get("template")
    if name is None:
        return spec
    base = copy.deepcopy(TEMPLATES[name])
    overrides = {k: v for k, v in spec.items() if k != "template"}
    if "action" in overrides:  # a single action replaces the template's list
        base.pop("actions", None)
    return _merge(base, overrides)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge_value(merged.get(key), value)
    return merged


def _merge_value(base: Any, value: Any) -> Any:
    if isinstance(value, dict) and isinstance(base, dict):
        return _merge(base, value)
    if (
        isinstance(value, list)
        and isinstance(base, list)
        and all(isinstance(item, dict) for item in [*value, *base])
    ):
        merged = [_merge(b, v) for b, v in zip(base, value, strict=False)]
        return merged + copy.deepcopy(value[len(base) :]) + base[len(value) :]
    return copy.deepcopy(value)
