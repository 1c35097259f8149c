"""Which run the current code executes in, and what it may know about it."""

from __future__ import annotations

import datetime as dt
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import NotInWorkflowError

if TYPE_CHECKING:
    from .execution import Execution

current_execution: ContextVar[Execution | None] = ContextVar(
    "celery_durable_execution", default=None
)


@dataclass(frozen=True)
class RunContext:
    run_id: str
    workflow_name: str
    attempt: int
    started_at: dt.datetime
    idempotency_key: str | None
    # A run started by a schedule: the tick it was started for, and the schedule.
    scheduled_at: dt.datetime | None = None
    schedule: str | None = None


# Set while the body of a dispatched step runs in its own task: the run it belongs to.
current_step_run: ContextVar[RunContext | None] = ContextVar(
    "celery_durable_step_run", default=None
)


def get_context() -> RunContext:
    """Facts about the running workflow; recorded, so identical on replay.

    Also inside the body of a step dispatched as its own task (the run it
    belongs to, `attempt` being the workflow's attempt that dispatched it).
    """
    execution = current_execution.get()
    if execution is None:
        step_run = current_step_run.get()
        if step_run is not None:
            return step_run
        raise NotInWorkflowError("get_context() can only be called inside a running workflow")
    return execution.context()
