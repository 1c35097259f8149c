"""Safe message templates: `{task_name}` and friends, nothing more.

`str.format` would let a rule read attributes and items (`{task_args.__class__}`,
`{error_message[0]}`) and run format specs (`{task_name:>300000000}` builds a
300 MB string; `{task_name:d}` raises every time the rule fires). Here a
field must be one of the documented variable names with no conversion and no
format spec, checked when the rules load, and values are inserted as text.
"""

from __future__ import annotations

import datetime as dt
import string
from typing import Any

from ..activity import Activity

VARIABLES = (
    "task_name",
    "task_id",
    "worker",
    "queue",
    "error_message",
    "task_args",
    "timestamp",
    "workflow_name",
    "rule_name",
    "attempt",
    "run_id",
    "event",
)

_formatter = string.Formatter()


def check_template(template: str, extra: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the first field that is not a plain variable.

    A plain variable has no `.attribute`, `[index]`, `!conversion` or `:spec`.

    `extra` are the variables the rule's trigger adds (see `Trigger.variables`).
    """
    known = (*VARIABLES, *extra)
    try:
        parsed = list(_formatter.parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed template {template!r}: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in known:
            if any(c in field for c in ".[]") or not field:
                raise ValueError(
                    f"template field {{{field}}} is not allowed: only plain variable names, "
                    f"no attribute or index access ({', '.join(known)})"
                )
            raise ValueError(f"unknown template variable {{{field}}}; known: {', '.join(known)}")
        if conversion or spec:
            written = (
                f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            )
            raise ValueError(
                f"template field {written}: format specs and conversions are not allowed "
                f"(write {{{field}}}); values are inserted as text"
            )


def variables(event: Activity, rule_name: str) -> dict[str, str]:
    data = event.data
    error = data.get("error") or {}
    message = data.get("error_message") or (error.get("message") if isinstance(error, dict) else "")
    args = data.get("args_repr") or ""
    kwargs = data.get("kwargs_repr")
    if kwargs not in (None, "", "{}") and kwargs != args:  # both redacted: one placeholder
        args = f"{args} {kwargs}".strip()
    retry = data.get("retry") or {}
    values = {
        "task_name": data.get("task_name"),
        "task_id": data.get("task_id"),
        "worker": data.get("worker"),
        "queue": data.get("queue"),
        "error_message": message,
        "task_args": args,
        "timestamp": dt.datetime.fromtimestamp(event.ts, tz=dt.UTC).isoformat(),
        "workflow_name": data.get("workflow_name"),
        "rule_name": rule_name,
        "attempt": retry.get("attempt", 0) if isinstance(retry, dict) else 0,
        "run_id": data.get("run_id"),
        "event": event.type,
    }
    return {k: "" if v is None else str(v) for k, v in values.items()}


def render(template: str, event: Activity, rule_name: str) -> str:
    """Render a checked template; values are text, so no object is reachable."""
    values = variables(event, rule_name)
    out: list[str] = []
    for literal, field, _, _ in _formatter.parse(template):
        out.append(literal)
        if field is not None:
            # A trigger's own variable (checked at load) comes from the event's data.
            value: Any = values.get(field, event.data.get(field, ""))
            out.append("" if value is None else str(value))  # never a format spec
    return "".join(out)
