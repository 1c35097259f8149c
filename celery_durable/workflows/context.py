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


def get_context() -> RunContext:
    """Facts about the running workflow; recorded, so identical on replay."""
    execution = current_execution.get()
    if execution is None:
        raise NotInWorkflowError("get_context() can only be called inside a running workflow")
    return execution.context()
