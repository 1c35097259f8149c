"""Built-in triggers: what happens to tasks, workers and workflow runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from .. import activity
from ..hookspecs import hookimpl
from ..rules.base import Trigger
from ..rules.bounds import Between

if TYPE_CHECKING:
    from ..activity import Activity

MAX_THRESHOLD_SECONDS = 7 * 86400


class TaskFailed(Trigger):
    """A task raised; reported by the worker that ran it, with the real request."""

    name = activity.TASK_FAILED


class TaskOrphaned(Trigger):
    """A task was held (running or prefetched) by a worker that died."""

    name = activity.TASK_ORPHANED


class TaskExecutionTimeExceeded(Trigger):
    """A task still runs `threshold_seconds` after it started; reported once, while it runs."""

    name = activity.TASK_EXECUTION_TIME_EXCEEDED

    def __init__(
        self, threshold_seconds: Annotated[float, Between(0, MAX_THRESHOLD_SECONDS, low_open=True)]
    ):
        self.threshold_seconds = float(threshold_seconds)

    def matches(self, event: Activity) -> bool:
        return (
            event.type == self.name
            and event.data.get("threshold_seconds") == self.threshold_seconds
        )


class WorkerOffline(Trigger):
    """A worker stopped heart-beating and was recovered by a live one."""

    name = activity.WORKER_OFFLINE


class WorkflowFailed(Trigger):
    name = activity.WORKFLOW_FAILED


class WorkflowTimedOut(Trigger):
    name = activity.WORKFLOW_TIMED_OUT


class WorkflowBlocked(Trigger):
    """A run's history does not replay under the code deployed (or its code is missing)."""

    name = activity.WORKFLOW_BLOCKED


@hookimpl
def durable_triggers() -> list[type[Trigger]]:
    return [
        TaskFailed,
        TaskOrphaned,
        TaskExecutionTimeExceeded,
        WorkerOffline,
        WorkflowFailed,
        WorkflowTimedOut,
        WorkflowBlocked,
    ]
