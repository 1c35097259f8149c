"""A celery_durable action that opens a PagerDuty incident (Events API v2).

An example of a third-party plugin: one `Action` subclass, returned by a
`durable_actions` hook implementation, found through the `celery_durable`
entry-point group declared in this package's pyproject.toml. Once the package
is installed, every app with celery_durable accepts `type: pagerduty` in its
rules:

```yaml
- name: Page on payment failures
  trigger:
    event: task.failed
    conditions:
      task_name_pattern: "payments.*"
  action:
    type: pagerduty
    routing_key: "0123456789abcdef0123456789abcdef"
    severity: critical
```

Like every action it runs in a worker's action runner, never inside a task,
and its parameters are checked when the rules load (the worker refuses to
start with a bad one, naming the rule and the field).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery_durable.hookspecs import hookimpl
from celery_durable.rules.base import Action

__all__ = ["EVENTS_API_URL", "SEVERITIES", "PagerDuty", "durable_actions"]

__version__ = "0.1.0.dev0"

EVENTS_API_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")

SUMMARY_LIMIT = 1024  # PagerDuty truncates longer summaries
DEDUP_KEY_LIMIT = 255  # and refuses longer dedup keys
TRACEBACK_LIMIT = 4000  # keep custom_details well under the 512 KB event limit

# The event data worth showing on the incident (never the task's message
# itself: it holds the real arguments, which may be large or sensitive).
DETAIL_KEYS = (
    "task_id",
    "task_name",
    "queue",
    "args_repr",
    "kwargs_repr",
    "error_type",
    "error_message",
    "run_id",
    "workflow_name",
    "threshold_seconds",
    "recovered_by",
)


class PagerDuty(Action):
    """Trigger a PagerDuty alert through the Events API v2.

    The alert's dedup key is the rule's name and the task id (or the run id):
    the same failure reported twice (an action job re-run after its worker
    died) updates one alert instead of opening two.
    """

    name = "pagerduty"
    template_fields = ("summary",)
    notification = True
    secret_fields = ("routing_key",)  # redacted from errors and logs by celery_durable

    def __init__(
        self,
        routing_key: str,
        severity: str = "error",
        url: str = EVENTS_API_URL,
        summary: str = "{task_name}{workflow_name} failed on {worker}: {error_message}",
        timeout: float = 10.0,
    ):
        if not routing_key.strip():
            raise ValueError("routing_key must be a PagerDuty integration key, got ''")
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http(s) URL, got {url!r}")
        if not 0 < timeout <= 60:  # also refuses NaN; the action runner waits this long
            raise ValueError(f"timeout must be > 0 and <= 60, got {timeout!r}")
        self.routing_key = routing_key
        self.severity = severity
        self.url = url
        self.summary = summary
        self.timeout = float(timeout)

    def dedup_key(self, event: Any, context: Any) -> str:
        data = event.data
        subject = data.get("task_id") or data.get("run_id") or context.execution_id
        return f"{context.rule_name}:{event.type}:{subject}"[:DEDUP_KEY_LIMIT]

    def payload(self, event: Any, context: Any) -> dict[str, Any]:
        """The Events API v2 body for this event (what `run()` posts)."""
        data = event.data
        summary = context.render(self.summary, event).strip() or event.type
        details = {key: data[key] for key in DETAIL_KEYS if data.get(key) not in (None, "")}
        error = data.get("error")
        if isinstance(error, dict):  # workflow events carry the recorded exception
            details.setdefault("error_type", error.get("type"))
            details.setdefault("error_message", error.get("message"))
        traceback = data.get("traceback") or (error or {}).get("traceback")
        if traceback:
            details["traceback"] = str(traceback)[-TRACEBACK_LIMIT:]
        details.update(event=event.type, rule=context.rule_name, execution_id=context.execution_id)
        return {
            "routing_key": self.routing_key,
            "event_action": "trigger",
            "dedup_key": self.dedup_key(event, context),
            "payload": {
                "summary": summary[:SUMMARY_LIMIT],
                "source": str(data.get("worker") or context.app.main or "celery"),
                "severity": self.severity,
                "timestamp": dt.datetime.fromtimestamp(event.ts, tz=dt.UTC).isoformat(),
                "component": str(data.get("task_name") or data.get("workflow_name") or ""),
                "group": str(data.get("queue") or ""),
                "class": event.type,
                "custom_details": {k: _text(v) for k, v in details.items()},
            },
        }

    def run(self, event: Any, context: Any) -> Any:
        body = self.payload(event, context)
        response = context.http.post(self.url, json=body, timeout=self.timeout)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(
                f"PagerDuty answered {response.status_code}: {response.text[:300]!r}"
            )
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        dedup_key = answer.get("dedup_key") if isinstance(answer, dict) else None
        return {"status": response.status_code, "dedup_key": dedup_key or body["dedup_key"]}

    def preview(self, event: Any, context: Any) -> dict[str, Any]:
        body = self.payload(event, context)
        body["routing_key"] = _mask(body["routing_key"])  # dry runs are shown to people
        return {"type": self.name, "url": self.url, "payload": body}


def _text(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _mask(key: str) -> str:
    return key[:4] + "..." if len(key) > 8 else "..."


@hookimpl
def durable_actions() -> list[type[Action]]:
    return [PagerDuty]
