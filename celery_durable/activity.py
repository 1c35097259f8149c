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

TASK_FAILED = "task.failed"
TASK_ORPHANED = "task.orphaned"
TASK_EXECUTION_TIME_EXCEEDED = "task.execution_time_exceeded"
WORKER_OFFLINE = "worker.offline"
WORKFLOW_FAILED = "workflow.failed"
WORKFLOW_TIMED_OUT = "workflow.timed_out"


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
