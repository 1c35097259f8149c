"""The one definition of a history event (an entry of a run's journal) and its codec.

Not to be confused with activities (`activity.py`, the global stream the
rules see) or inbox events (what `send_event()` delivers to a run). An
event is a msgpack map `{"seq", "type", "ts", "data"}` stored as the single
field `e` of a stream entry. `seq` counts from 1 per run and is the position
the fenced append checks; `ts` is the writer's wall clock in seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..codec import Packed, has_packed, packb, packb_map, unpackb, unpacked
from ..errors import JournalCorruptError


class EventType(StrEnum):
    WORKFLOW_STARTED = "workflow.started"
    WORKFLOW_EXECUTING = "workflow.executing"
    WORKFLOW_RETRYING = "workflow.retrying"
    WORKFLOW_COMPLETED = "workflow.completed"
    WORKFLOW_FAILED = "workflow.failed"
    WORKFLOW_SUSPENDED = "workflow.suspended"
    WORKFLOW_CANCELLED = "workflow.cancelled"
    WORKFLOW_TIMED_OUT = "workflow.timed_out"
    WORKFLOW_BLOCKED = "workflow.blocked"
    STEP_DISPATCHED = "step.dispatched"
    STEP_COMPLETED = "step.completed"
    STEP_RETRYING = "step.retrying"
    STEP_FAILED = "step.failed"
    SLEEP_STARTED = "sleep.started"
    EVENT_WAITING = "event.waiting"
    EVENT_RECEIVED = "event.received"
    EVENT_TIMED_OUT = "event.timed_out"
    CHILD_STARTED = "child.started"
    PATCH_MARKED = "patch.marked"


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    BLOCKED = "blocked"  # its history does not replay under the code here: see `runs resume`


FINAL_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT}
)

# The status a run has after an event of this type; absent types keep it.
# `workflow.suspended` carries its status (sleeping or waiting) in its data.
STATUS_AFTER: dict[str, RunStatus] = {
    EventType.WORKFLOW_STARTED: RunStatus.PENDING,
    EventType.WORKFLOW_EXECUTING: RunStatus.RUNNING,
    EventType.WORKFLOW_COMPLETED: RunStatus.COMPLETED,
    EventType.WORKFLOW_FAILED: RunStatus.FAILED,
    EventType.WORKFLOW_CANCELLED: RunStatus.CANCELLED,
    EventType.WORKFLOW_TIMED_OUT: RunStatus.TIMED_OUT,
    EventType.WORKFLOW_BLOCKED: RunStatus.BLOCKED,
}

# Events that record what the workflow's code did at a position, in order.
COMMAND_TYPES = frozenset(
    {
        EventType.STEP_DISPATCHED,
        EventType.STEP_COMPLETED,
        EventType.STEP_RETRYING,
        EventType.STEP_FAILED,
        EventType.SLEEP_STARTED,
        EventType.EVENT_WAITING,
        EventType.EVENT_RECEIVED,
        EventType.EVENT_TIMED_OUT,
        EventType.CHILD_STARTED,
    }
)


def status_after(event: Event, current: str = "") -> str:
    if event.type == EventType.WORKFLOW_SUSPENDED:
        return str(event.data["status"])
    return STATUS_AFTER.get(event.type, current)


KNOWN_TYPES = frozenset(t.value for t in EventType)


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)
    # Its encoding, when made already (`Event.build` from data with `Packed` values).
    raw: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, seq: int, type: str, data: dict[str, Any], ts: float) -> Event:
        """An event from data whose values may be `Packed` (encoded once, here)."""
        if not has_packed(data):
            return cls(seq=seq, type=type, data=data, ts=ts)
        body = Packed(unpacked(data), packb_map(data))
        raw = packb_map({"seq": seq, "type": type, "ts": ts, "data": body})
        return cls(seq=seq, type=type, data=body.value, ts=ts, raw=raw)

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return packb({"seq": self.seq, "type": self.type, "ts": self.ts, "data": self.data})

    @classmethod
    def decode(cls, raw: bytes, *, where: str) -> Event:
        """Decode one stored event; anything malformed is a `JournalCorruptError`."""
        try:
            body = unpackb(raw)
            event = cls(
                seq=int(body["seq"]),
                type=str(body["type"]),
                ts=float(body["ts"]),
                data=dict(body["data"]),
            )
        except Exception as exc:  # any shape error in stored bytes means corruption
            raise JournalCorruptError(f"{where}: cannot decode event ({exc!r})") from None
        if event.type not in KNOWN_TYPES:
            raise JournalCorruptError(
                f"{where}: event {event.seq} has unknown type {event.type!r}; "
                "was it written by a newer celery_durable?"
            )
        return event

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "ts": self.ts, "data": self.data}
