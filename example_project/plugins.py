"""The shop's own celery_durable plugin: an `audit_log` action for its rules.

A plugin is a module with `@hookimpl` functions. This one is listed in the
app's `durable_plugins` setting (see `celery.py`), so every worker, and every
process that reads the rules, registers it; a rule in `rules.yaml` then says
`type: audit_log`:

```yaml
actions:
  - type: audit_log
    line: "retried {task_name} {task_id} after {error_message}"
```

Like every action it runs in a worker's action runner, never inside a task,
and its parameters are checked when the rules load (a misspelt variable in
`line`, a bad `max_lines`: the worker refuses to start, naming rule and field).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery_durable import Action, hookimpl

# The Redis list the audit lines go to, oldest first.
AUDIT_KEY = "example_project:audit"


class AuditLog(Action):
    """Append one rendered line, stamped with the time, to a Redis list."""

    name = "audit_log"  # the `type:` in a rule
    template_fields = ("line",)  # checked at load, rendered with the event's variables

    def __init__(
        self,
        line: str = "{rule_name}: {event} {task_name}{workflow_name} {error_message}",
        key: str = AUDIT_KEY,
        max_lines: int = 10_000,
    ):
        if not key.strip():
            raise ValueError("key must name a Redis list, got ''")
        if max_lines < 1:
            raise ValueError(f"max_lines must be >= 1, got {max_lines!r}")
        self.line = line
        self.key = key
        self.max_lines = max_lines

    def text(self, event: Any, context: Any) -> str:
        when = dt.datetime.fromtimestamp(event.ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{when} [{context.rule_name}] {context.render(self.line, event)}"

    def run(self, event: Any, context: Any) -> Any:
        line = self.text(event, context)
        pipe = context.redis.pipeline(transaction=True)
        pipe.rpush(self.key, line)
        pipe.ltrim(self.key, -self.max_lines, -1)
        length = pipe.execute()[0]
        return {"key": self.key, "line": line, "length": length}  # kept in the rule's history

    def preview(self, event: Any, context: Any) -> dict[str, Any]:
        return {"type": self.name, "key": self.key, "line": self.text(event, context)}


@hookimpl
def durable_actions() -> list[type[Action]]:
    return [AuditLog]
