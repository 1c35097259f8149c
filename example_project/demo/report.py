"""Turning a run's journal into a few readable lines.

Everything shown comes from `RunHandle.events()`: the journal is the whole
truth about a run, and reading it is how an operator would debug one.
"""

from __future__ import annotations

import json
import time
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


def _seconds(value: float) -> str:
    """A duration as people say it: 0.5 s, 2 s, 1 h."""
    if value >= 60:
        value = round(value)  # due times are computed a few ms apart: 3599.99 s is 1 h
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value:.3g} s"


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
    if kind == "sleep.started":
        return f"durable sleep of {_seconds(data['seconds'])}"
    if kind == "workflow.suspended":
        until = data.get("until")
        due = f", resumes in {_seconds(until - event['ts'])} at the latest" if until else ""
        if data["status"] == "sleeping" and until:
            due = f", resumes in {_seconds(until - event['ts'])}"
        return f"{data['status']}: its task ended, no worker held{due}"
    if kind == "event.waiting":
        timeout_at = data.get("timeout_at")
        limit = f", timeout {_seconds(timeout_at - event['ts'])}" if timeout_at else ""
        return f"until send_event(..., {data['name']!r}){limit}"
    if kind == "event.received":
        return f"payload {json.dumps(data['payload'])}"
    if kind == "event.timed_out":
        return f"no {data['name']!r} event in time"
    if "error" in data:
        return short_error(data["error"])
    return ""


def timeline(events: list[dict[str, Any]]) -> list[str]:
    """One line per event: ms since the run started, type, step or wait, attempt, detail."""
    if not events:
        return []
    origin = events[0]["ts"]
    lines = []
    for event in events:
        data = event["data"]
        named = event["type"].startswith(("step.", "sleep.", "event."))
        step = data.get("name", "") if named else ""
        attempt = f"attempt {data['attempt']}" if "attempt" in data else ""
        elapsed = (event["ts"] - origin) * 1000
        detail = _detail(event)
        line = f"{elapsed:>7.0f} ms  {event['type']:<19} {step:<14} {attempt:<10} {detail}"
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


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def _short(task_id: Any) -> str:
    return str(task_id or "?")[:8]


def render_rule(rule: dict[str, Any]) -> list[str]:
    """A rule as `list_rules()` describes it: trigger, parts, breaker, last firing."""
    breaker = rule["breaker"]
    window = _seconds(float(breaker["window_seconds"]))
    state = "enabled" if rule["enabled"] else "disabled"
    last = rule["last_outcome"] or "never fired"
    return [
        f"  {rule['name']}  ({state})",
        f"    on {rule['event']} if {', '.join(rule['conditions']) or 'always'}"
        f" -> {', '.join(rule['actions'])}",
        f"    breaker {breaker['state']}: {breaker['executions']} of "
        f"{breaker['max_executions']} executions in {window}; last outcome: {last}",
    ]


def _subject(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    if data.get("task_name"):
        name = str(data["task_name"]).rsplit(".", 1)[-1]
        return f"{name} {_short(data.get('task_id'))}"
    if data.get("run_id"):
        return f"{data.get('workflow_name') or 'run'} {_short(data['run_id'])}"
    return ""


def _event_error(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    if data.get("error_type"):
        return f"{data['error_type']}: {data.get('error_message', '')}"
    if isinstance(data.get("error"), dict):
        return short_error(data["error"])
    return ""


def action_text(action: dict[str, Any]) -> str:
    """What one action of a rule execution did, from its history entry."""
    if not action.get("ok"):
        return f"FAILED: {action.get('error')}"
    result = action.get("result")
    if action.get("skipped"):
        return f"skipped: {result}"
    if not isinstance(result, dict):
        return json.dumps(result, default=str)
    kind = action.get("type")
    if kind == "retry":
        return (
            f"sent task {_short(result['task_id'])} (retry {result['attempt']} of "
            f"{_short(result['root'])}) with a {_seconds(float(result['delay']))} countdown"
        )
    if kind == "slack":
        return f"posted, answer {result.get('status')}: {result.get('text')!r}"
    if kind == "audit_log":
        return f"appended line {result.get('length')} to {result.get('key')}"
    return json.dumps(result, default=str)


def render_history(entries: list[dict[str, Any]]) -> list[str]:
    """A rule's history entries, oldest first: event, conditions, each action, outcome."""
    lines = []
    for entry in sorted(entries, key=lambda e: e["ts"]):
        event = entry.get("event") or {}
        error = _event_error(event)
        lines.append(
            f"    {_clock(entry['ts'])}  {event.get('type', '?')}  {_subject(event)}"
            + (f"  ({error})" if error else "")
        )
        held = [c["condition"] for c in entry.get("conditions", []) if c.get("holds")]
        if held:
            lines.append(f"      conditions held: {', '.join(held)}")
        for action in entry.get("actions", []):
            lines.append(f"      {action.get('type', '?'):<10} {action_text(action)}")
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        lines.append(f"      outcome    {entry.get('outcome')}{reason}")
    return lines
