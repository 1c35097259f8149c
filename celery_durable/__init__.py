"""celery_durable: durable workflows and automation rules for Celery 5."""

from .errors import (
    DurableError,
    EncodingError,
    EventTimeoutError,
    FatalError,
    JournalConflictError,
    NonDeterminismError,
    ResultTimeoutError,
    RetryableError,
    RunFinishedError,
    RunNotFoundError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowTimedOutError,
)
from .install import install
from .workflows.context import RunContext, get_context
from .workflows.control import send_event
from .workflows.definition import Workflow, workflow
from .workflows.runs import RunHandle, get_run, start
from .workflows.steps import step
from .workflows.waits import sleep, wait_for_event

__all__ = [
    "DurableError",
    "EncodingError",
    "EventTimeoutError",
    "FatalError",
    "JournalConflictError",
    "NonDeterminismError",
    "ResultTimeoutError",
    "RetryableError",
    "RunContext",
    "RunFinishedError",
    "RunHandle",
    "RunNotFoundError",
    "Workflow",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowNotFoundError",
    "WorkflowTimedOutError",
    "get_context",
    "get_run",
    "install",
    "send_event",
    "sleep",
    "start",
    "step",
    "wait_for_event",
    "workflow",
]
