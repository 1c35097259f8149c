"""celery_durable: durable workflows and automation rules for Celery 5."""

from .errors import (
    DurableError,
    EncodingError,
    EventTimeoutError,
    FatalError,
    JournalConflictError,
    NonDeterminismError,
    PayloadTooLargeError,
    RedisAccessError,
    RedisOutOfMemoryError,
    ResultTimeoutError,
    RetryableError,
    RulesError,
    RunEventLimitError,
    RunFinishedError,
    RunNotFoundError,
    ScheduleError,
    ScheduleNotFoundError,
    StepNotFoundError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowTimedOutError,
)
from .hookspecs import hookimpl
from .install import install
from .rules.api import (
    breaker_state,
    list_rules,
    reset_breaker,
    retry_chain,
    rule_history,
    set_rule_enabled,
)
from .rules.base import Action, Condition, Trigger
from .rules.dry_run import dry_run, send_test_notification
from .schedules.api import (
    delete_schedule,
    describe_schedule,
    list_schedules,
    pause_schedule,
    resume_schedule,
    schedule,
    trigger_schedule,
)
from .workflows.context import RunContext, get_context
from .workflows.control import send_event
from .workflows.definition import Workflow, workflow
from .workflows.patches import deprecated_patch, patched
from .workflows.runs import RunHandle, get_run, start
from .workflows.steps import StepHandle, gather, step
from .workflows.waits import sleep, wait_for_event

__all__ = [
    "Action",
    "Condition",
    "DurableError",
    "EncodingError",
    "EventTimeoutError",
    "FatalError",
    "JournalConflictError",
    "NonDeterminismError",
    "PayloadTooLargeError",
    "RedisAccessError",
    "RedisOutOfMemoryError",
    "ResultTimeoutError",
    "RetryableError",
    "RulesError",
    "RunContext",
    "RunEventLimitError",
    "RunFinishedError",
    "RunHandle",
    "RunNotFoundError",
    "ScheduleError",
    "ScheduleNotFoundError",
    "StepHandle",
    "StepNotFoundError",
    "Trigger",
    "Workflow",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowNotFoundError",
    "WorkflowTimedOutError",
    "breaker_state",
    "delete_schedule",
    "deprecated_patch",
    "describe_schedule",
    "dry_run",
    "gather",
    "get_context",
    "get_run",
    "hookimpl",
    "install",
    "list_rules",
    "list_schedules",
    "patched",
    "pause_schedule",
    "reset_breaker",
    "resume_schedule",
    "retry_chain",
    "rule_history",
    "schedule",
    "send_event",
    "send_test_notification",
    "set_rule_enabled",
    "sleep",
    "start",
    "step",
    "trigger_schedule",
    "wait_for_event",
    "workflow",
]
