"""celery_durable: durable workflows and automation rules for Celery 5."""

from .errors import (
    DurableError,
    EncodingError,
    FatalError,
    JournalConflictError,
    NonDeterminismError,
    ResultTimeoutError,
    RetryableError,
    RunNotFoundError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from .install import install
from .workflows.context import RunContext, get_context
from .workflows.definition import Workflow, workflow
from .workflows.runs import RunHandle, get_run, start
from .workflows.steps import step

__all__ = [
    "DurableError",
    "EncodingError",
    "FatalError",
    "JournalConflictError",
    "NonDeterminismError",
    "ResultTimeoutError",
    "RetryableError",
    "RunContext",
    "RunHandle",
    "RunNotFoundError",
    "Workflow",
    "WorkflowFailedError",
    "WorkflowNotFoundError",
    "get_context",
    "get_run",
    "install",
    "start",
    "step",
    "workflow",
]
