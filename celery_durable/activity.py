"""What happens to tasks, runs and workers: the one event type rules see.

An `Activity` is what `DurableExtension.emit()` writes to the global stream
(`durable:events`, msgpack in field `e`), hands to the rules, to the
`durable_event` plugin hook and to blinker subscribers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .codec import packb_lenient, unpackb
from .journal.events import EventType

# The types of activity, each named once. A run's end is published under the
# type of its final history event (`workflow.completed`, `workflow.failed`,
# `workflow.cancelled`, `workflow.timed_out`); polling triggers add their own.
TASK_FAILED = "task.failed"
TASK_ORPHANED = "task.orphaned"
TASK_EXECUTION_TIME_EXCEEDED = "task.execution_time_exceeded"
WORKER_OFFLINE = "worker.offline"
WORKFLOW_FAILED = EventType.WORKFLOW_FAILED.value
WORKFLOW_TIMED_OUT = EventType.WORKFLOW_TIMED_OUT.value

#: Activities about one Celery task: their data names it (`task_name`, `queue`, ...).
TASK_ACTIVITIES = frozenset({TASK_FAILED, TASK_ORPHANED, TASK_EXECUTION_TIME_EXCEEDED})
#: Runs that ended badly: their data holds `workflow_name` and `error`.
RUN_FAILURES = frozenset({WORKFLOW_FAILED, WORKFLOW_TIMED_OUT})


@dataclass(frozen=True)
class Activity:
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        return packb_lenient({"type": self.type, "ts": self.ts, "data": self.data})

    @classmethod
    def decode(cls, raw: bytes) -> Activity:
        body = unpackb(raw)
        return cls(type=body["type"], data=body.get("data") or {}, ts=body.get("ts", 0.0))

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "ts": self.ts, "data": self.data}
