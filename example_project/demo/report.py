"""Turning a run's journal into a few readable lines.

Everything shown comes from `RunHandle.events()`: the journal is the whole
truth about a run, and reading it is how an operator would debug one.
"""

from __future__ import annotations

import json
from typing import Any

from celery_durable import RunHandle


def error_text(error: dict[str, Any]) -> str:
    """`Type: message` from a recorded error, without the `builtins.` noise."""
    kind = str(error.get("type", "Exception")).removeprefix("builtins.")
    return f"{kind}: {error.get('message', '')}"


def short_error(error: dict[str, Any]) -> str:
    """Like `error_text`, with the type's module left out: for the timeline."""
    kind = str(error.get("type", "Exception")).rsplit(".", 1)[-1]
    return f"{kind}: {error.get('message', '')}"


def _detail(event: dict[str, Any]) -> str:
    data = event["data"]
    kind = event["type"]
    if kind == "workflow.started":
        key = data.get("idempotency_key")
        return f"key {key}" if key else "no idempotency key"
    if kind == "workflow.executing":
        return f"on {data.get('worker') or '?'}"
    if kind == "step.completed":
        return f"took {data['duration'] * 1000:.0f} ms"
    if kind == "step.retrying":
        return f"{short_error(data['error'])}; next try in {data['delay'] * 1000:.0f} ms"
    if "error" in data:
        return short_error(data["error"])
    return ""


def timeline(events: list[dict[str, Any]]) -> list[str]:
    """One line per event: ms since the run started, type, step, attempt, detail."""
    if not events:
        return []
    origin = events[0]["ts"]
    lines = []
    for event in events:
        data = event["data"]
        step = data.get("name", "") if event["type"].startswith("step.") else ""
        attempt = f"attempt {data['attempt']}" if "attempt" in data else ""
        elapsed = (event["ts"] - origin) * 1000
        line = f"{elapsed:>7.0f} ms  {event['type']:<19} {step:<14} {attempt:<10} {_detail(event)}"
        lines.append(line.rstrip())
    return lines


def render_run(label: str, run: RunHandle, raised: BaseException | None = None) -> list[str]:
    """The account of one run: what it is, how it ended, and its timeline.

    `raised` is what `run.result()` raised, to show that a failed run's error
    comes back to the caller with its own type.
    """
    events = run.events()
    started = events[0]["data"] if events else {}
    last = events[-1] if events else {"type": "", "data": {}}
    lines = [
        f"run {run.id}  ({label})",
        f"  workflow  {started.get('name', '?')}",
        f"  status    {run.status()}",
    ]
    if last["type"] == "workflow.completed":
        lines.append(f"  result    {json.dumps(last['data']['result'])}")
    elif "error" in last["data"]:
        lines.append(f"  error     {error_text(last['data']['error'])}")
    if raised is not None:
        kind = type(raised)
        lines.append(f"  result()  raised {kind.__module__}.{kind.__qualname__}")
    lines.append("  timeline")
    lines += [f"  {line}" for line in timeline(events)]
    return lines
