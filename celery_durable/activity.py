"""Activities: what happens to tasks, runs and workers, and who is told.

An `Activity` is what `DurableExtension.emit()` publishes: it tells the
`Listener`s of its process (the rules in a worker, the plugins'
`durable_event` hook everywhere) and writes it to the global stream
(`durable:events`, msgpack in field `e`). Rules trigger on activities; the
public API calls them events (`trigger.event`, `durable_event(event)`), and
a run's own history events are another thing (`journal.events`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
WORKFLOW_BLOCKED = EventType.WORKFLOW_BLOCKED.value

#: Activities about one Celery task: their data names it (`task_name`, `queue`, ...).
TASK_ACTIVITIES = frozenset({TASK_FAILED, TASK_ORPHANED, TASK_EXECUTION_TIME_EXCEEDED})
#: Runs that ended or stopped badly: their data holds `workflow_name` and `error`.
RUN_FAILURES = frozenset({WORKFLOW_FAILED, WORKFLOW_TIMED_OUT, WORKFLOW_BLOCKED})


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


#: Adds to an activity's data what only a rule that acts on it needs (a
#: failed task's message, the costly part); called at most once.
Complete = Callable[[dict[str, Any]], None]


class Listener:
    """Told about every activity emitted in its process (`DurableExtension.listen`).

    The extension publishes and the layers above subscribe, so that nothing
    below them needs to know them: the rules listen in a worker, the
    plugins' `durable_event` hook in every process. Methods are named for
    the moment they run and do nothing by default. Keep them quick; an
    error is logged, never raised into the code that emitted.
    """

    def wants(self, kind: str) -> bool:
        """Would `on_emit` act on an activity of this type?

        Asked before a costly activity is built: a task failure where nothing
        wants `task.failed` costs nothing more than the failure.
        """
        return False

    def on_emit(self, activity: Activity, complete: Complete | None) -> object:
        """The activity as it happens, whole (a retry needs the task's message).

        `complete(activity.data)` adds the costly part of the data; call it
        only to act on the activity. What it returns is not used.
        """
        return None

    def on_store(self, activity: Activity) -> None:
        """The activity as the global stream keeps it, just before it is written.

        Without task arguments under `durable_redact_args`, every text cut
        to `durable_max_text_bytes`.
        """
