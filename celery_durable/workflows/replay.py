"""Replaying recorded histories against the code importable now, writing nothing.

What `celery durable replay-check` runs before a deploy, what the
`durable_replay` pytest fixture runs on exported histories, and what a
worker runs before it takes a blocked run on again. A replay executes the
workflow function with an `Execution` in dry mode: recorded steps, sleeps,
waits and child starts are answered from the history; the first thing the
history does not hold ends the replay in agreement. No step body runs, no
message is sent, nothing is written.

The export format (`export_run`, `runs export`) is JSON, stable:

    {"format": "celery_durable.history/1", "run_id": "...", "workflow": "...",
     "status": "...", "events": [{"seq": 1, "type": "workflow.started",
     "ts": 1700000000.0, "data": {...}}, ...]}

`events` is `RunHandle.events()`; values JSON cannot hold (bytes) are
written as text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from ..errors import ConfigurationError, RunNotFoundError, WorkflowNotFoundError
from ..extension import DurableExtension, extension_for
from ..journal.events import FINAL_STATUSES, Event, EventType, RunStatus
from .execution import Execution
from .registry import WorkflowDefinition, lookup

FORMAT = "celery_durable.history/1"
UNFINISHED = tuple(s.value for s in RunStatus if s not in FINAL_STATUSES)
_BATCH = 200


@dataclass(frozen=True)
class Divergence:
    """Where a run's history and the code part: what `replay-check` lists."""

    run_id: str
    workflow: str
    status: str
    position: int | None  # None: the workflow is not importable here at all
    recorded: str
    asked: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def replay_history(
    ext: DurableExtension,
    run_id: str,
    events: list[Event],
    *,
    status: str = "",
    definition: WorkflowDefinition | None = None,
) -> Divergence | None:
    """Replay one history dry against the code here: its divergence, or None."""
    if not events or events[0].type != EventType.WORKFLOW_STARTED:
        raise ConfigurationError(f"run {run_id}: a history begins with workflow.started")
    name = str(events[0].data["name"])
    if definition is None:
        try:
            definition = lookup(name)
        except WorkflowNotFoundError as exc:
            return Divergence(run_id, name, status, None, "", "", str(exc))
    error = Execution(ext, run_id, events, definition).dry_run()
    if error is None:
        return None
    return Divergence(run_id, name, status, error.position, error.recorded, error.asked, str(error))


@dataclass
class CheckReport:
    """What `replay-check` found: the divergences, how many runs, how long it took."""

    checked: int
    divergences: list[Divergence]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        per_1000 = self.seconds / self.checked * 1000 if self.checked else 0.0
        return {
            "checked": self.checked,
            "diverging": len(self.divergences),
            "seconds": round(self.seconds, 3),
            "seconds_per_1000_runs": round(per_1000, 3),
            "divergences": [d.as_dict() for d in self.divergences],
        }


def replay_check(
    *,
    workflow: str | None = None,
    statuses: tuple[str, ...] = UNFINISHED,
    limit: int | None = None,
    app: Celery | None = None,
) -> CheckReport:
    """Replay the stored runs (`statuses`, of `workflow`) against the code here.

    Reads only: the runs index, then each selected run's meta and history.
    `limit` bounds how many runs are replayed (the newest first).
    """
    unknown = set(statuses) - {s.value for s in RunStatus}
    if unknown:
        raise ConfigurationError(
            f"unknown status {sorted(unknown)[0]!r}; one of {', '.join(s.value for s in RunStatus)}"
        )
    if limit is not None and limit < 1:
        raise ConfigurationError(f"limit must be at least 1, got {limit}")
    ext = extension_for(app)
    began = time.perf_counter()
    checked, found = 0, []
    for run_id, status, events in _stored(ext, workflow, set(statuses)):
        checked += 1
        divergence = replay_history(ext, run_id, events, status=status)
        if divergence is not None:
            found.append(divergence)
        if limit is not None and checked >= limit:
            break
    return CheckReport(checked, found, time.perf_counter() - began)


def _stored(
    ext: DurableExtension, workflow: str | None, statuses: set[str]
) -> Iterator[tuple[str, str, list[Event]]]:
    """(run id, status, history) of the indexed runs that match, newest first."""
    keys, journal = ext.keys, ext.journal
    start = 0
    while True:
        members = ext.redis.zrevrange(keys.runs_index(), start, start + _BATCH - 1)
        batch = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        if not batch:
            return
        start += len(batch)
        pipe = ext.redis.pipeline(transaction=False)
        for run_id in batch:
            pipe.hmget(keys.run_meta(run_id), "name", "status")
        wanted = []
        for run_id, (name, status) in zip(batch, pipe.execute(), strict=True):
            if status is None or status.decode() not in statuses:
                continue
            if workflow is not None and (name or b"").decode() != workflow:
                continue
            wanted.append((run_id, status.decode()))
        pipe = ext.redis.pipeline(transaction=False)
        for run_id, _ in wanted:
            pipe.xrange(keys.run_events(run_id))
        for (run_id, status), entries in zip(wanted, pipe.execute(), strict=True):
            events = [journal._decode(run_id, entry_id, fields) for entry_id, fields in entries]
            if events:
                yield run_id, status, events


# -- export and import ---------------------------------------------------------------


def export_run(run_id: str, *, app: Celery | None = None) -> dict[str, Any]:
    """A run's history in the export format (see the module)."""
    ext = extension_for(app)
    meta, events = ext.journal.load(run_id)
    if not meta:
        raise RunNotFoundError(f"no run with id {run_id!r}")
    return {
        "format": FORMAT,
        "run_id": run_id,
        "workflow": meta.get("name"),
        "status": meta.get("status"),
        "events": [event.as_dict() for event in events],
    }


def load_history(source: str | Path | dict[str, Any]) -> tuple[str, str, list[Event]]:
    """(run id, status, events) of an exported history: a dict, or a path to its JSON."""
    where = "the history"
    if isinstance(source, dict):
        body = source
    else:
        where = str(source)
        try:
            body = json.loads(Path(source).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{where}: cannot read an exported history ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ConfigurationError(
            f"{where}: not an exported history (format {FORMAT!r}, from `runs export`)"
        )
    try:
        events = [
            Event(seq=int(e["seq"]), type=str(e["type"]), data=dict(e["data"]), ts=float(e["ts"]))
            for e in body["events"]
        ]
        return str(body["run_id"]), str(body.get("status") or ""), events
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: a malformed event ({exc!r})") from None


__all__ = [
    "FORMAT",
    "CheckReport",
    "Divergence",
    "export_run",
    "load_history",
    "replay_check",
    "replay_history",
]
