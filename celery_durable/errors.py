"""Every error celery_durable raises, in one place.

Messages say what went wrong, where, and what to do about it. Errors that a
workflow's own code raises to steer the engine (`FatalError`,
`RetryableError`) live here too, so user code imports them from one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class DurableError(Exception):
    """Base class of every celery_durable error."""


# -- raised by user code to steer retries ------------------------------------


class FatalError(DurableError):
    """Raise from a step or workflow to fail the run at once, without retries."""


class RetryableError(DurableError):
    """Raise from a step to ask for a retry, optionally after `retry_after`.

    `retry_after` is a duration ("30s", "5m") or seconds; it replaces the
    step's own backoff delay for this attempt.
    """

    def __init__(self, message: str = "", retry_after: float | str | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# -- configuration and input ---------------------------------------------------


class ConfigurationError(DurableError):
    """A setting, a decorator option or a registration is wrong."""


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong with a rule: where it is (source, rule, field) and what.

    `source` is where the rules came from (`durable_rules`, a file, `save_rules`);
    `rule` the rule's name (None when it has none, or for a problem of the
    whole source); `index` its position there (1-based); `field` the path of
    the bad field (`trigger.conditions.error_pattern`, `actions[0] (retry).delay_seconds`),
    None for the rule as a whole. A dashboard places each problem from these
    without parsing the message; `str()` is the line the CLI prints.
    """

    message: str
    rule: str | None = None
    field: str | None = None
    index: int | None = None
    source: str = "durable_rules"

    def __str__(self) -> str:
        where = []
        if self.rule is not None:
            where.append(f"rule {self.rule!r}" + (f" (#{self.index})" if self.index else ""))
        elif self.index is not None:
            where.append(f"rule #{self.index}")
        if self.field:
            where.append(self.field)
        return ": ".join([*where, self.message])

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rule": self.rule,
            "index": self.index,
            "field": self.field,
            "message": self.message,
        }


class RulesError(ConfigurationError):
    """Rules have problems; the message lists each with its rule and field.

    All problems of all rules at once: a user fixing a rules file needs every
    one, not the first. `details` holds them as `RuleProblem`s (rule, field,
    message apart), `problems` as the lines the message shows.
    """

    def __init__(self, problems: Sequence[str | RuleProblem], source: str = "durable_rules"):
        self.source = source
        self.details: list[RuleProblem] = [
            p if isinstance(p, RuleProblem) else RuleProblem(str(p), source=source)
            for p in problems
        ]
        self.problems = [str(p) for p in self.details]
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} has {len(self.problems)} problem(s):\n{lines}")


class RedisAccessError(ConfigurationError):
    """The journal's Redis refuses celery_durable for good: a wrong password, a user
    without permissions, a TLS certificate that does not verify, an unknown command.

    Raised at once, not retried; the message names `durable_redis_url`
    (without its password) and what to change.
    """


class EncodingError(DurableError, TypeError):
    """A value cannot be recorded in the journal (msgpack cannot encode it)."""


class PayloadTooLargeError(EncodingError):
    """A value is larger, encoded, than `durable_max_payload_bytes` allows."""


class NotInstalledError(DurableError):
    """No Celery app has celery_durable installed."""


class NotInWorkflowError(DurableError):
    """A workflow-only function was called outside a running workflow."""


class RunNotFoundError(DurableError, LookupError):
    """No run with that id exists in the journal."""


class WorkflowNotFoundError(DurableError, LookupError):
    """No workflow of that name is registered in this process."""


class ScheduleError(ConfigurationError):
    """A schedule's definition is wrong (a bad cron string, timezone, interval, policy).

    Raised where the schedule is defined (`@workflow(schedule=...)` at import,
    `schedule()` at the call), naming the schedule and the option.
    """


class ScheduleNotFoundError(DurableError, LookupError):
    """No schedule of that name is stored."""


class StepNotFoundError(FatalError, LookupError):
    """A dispatched step's code is not importable on the worker that got its message.

    Recorded as the step's failure (not retried: its policy is in the
    missing code) and raised in the workflow; the message names the step,
    the queue and the worker, so that the module can be imported there.
    """


# -- journal -------------------------------------------------------------------


class JournalConflictError(DurableError):
    """A fenced append found the run's log at another position than expected.

    Another execution of the same run got there first; this writer is stale and
    wrote nothing.
    """

    def __init__(self, run_id: str, expected: int, actual: int):
        super().__init__(
            f"run {run_id}: expected the journal at position {expected}, found it at "
            f"{actual}; another execution owns this run, nothing was written"
        )
        self.run_id = run_id
        self.expected = expected
        self.actual = actual


class StepsChangedError(DurableError):
    """Every dispatched step a run was about to wait for had finished meanwhile; look again."""

    def __init__(self, run_id: str):
        super().__init__(f"run {run_id}: the steps it waited for finished meanwhile")
        self.run_id = run_id


class InboxChangedError(DurableError):
    """An event arrived in a run's inbox while the run decided to wait; look again."""

    def __init__(self, run_id: str):
        super().__init__(f"run {run_id}: an event arrived while the run was about to wait")
        self.run_id = run_id


class RedisOutOfMemoryError(DurableError):
    """Redis refused a write because it reached `maxmemory` (policy `noeviction`).

    Nothing of the refused write was recorded. Inside a worker, executions
    wait and go on when Redis has room again; the message says how to make room.
    """


class JournalCorruptError(DurableError):
    """An event in a run's stream cannot be decoded or is of an unknown type."""


# -- outcomes of a run ----------------------------------------------------------


class NonDeterminismError(FatalError):
    """Replaying a run asked for another step than the one recorded there.

    The run is not failed for it: it is `blocked` until code that replays its
    history is deployed (`runs resume`) or an operator ends it (`runs fail`).
    `position`, `recorded` and `asked` say where and how it diverged (empty
    when the error was rebuilt from a journal).
    """

    def __init__(
        self, message: str, *, position: int | None = None, recorded: str = "", asked: str = ""
    ):
        super().__init__(message)
        self.position = position
        self.recorded = recorded
        self.asked = asked


class RunEventLimitError(FatalError):
    """A run reached `durable_max_run_events`: it fails instead of growing without end."""

    def __init__(self, run_id: str, limit: int, position: int):
        super().__init__(
            f"run {run_id} reached its limit of {limit:,} events (durable_max_run_events) "
            f"at position {position}; a workflow that loops for long should do each round's "
            "work in a child run (call start() inside the workflow) or continue in a new "
            "run, so that no single history grows without end"
        )
        self.run_id = run_id
        self.limit = limit
        self.position = position


class WorkflowFailedError(DurableError):
    """A run failed with an error whose original type cannot be rebuilt here.

    `error_type` holds the original type's dotted name and `error_message` its
    message.
    """

    def __init__(self, message: str, error_type: str = "", error_message: str = ""):
        super().__init__(message)
        self.error_type = error_type
        self.error_message = error_message


class RunFinishedError(DurableError):
    """The run has already finished; it takes no more events."""


class EventTimeoutError(DurableError, TimeoutError):
    """`wait_for_event(name, timeout=...)` saw no event in time.

    Raised inside the workflow, which may catch it and go on; `event_name`
    holds the name waited for.
    """

    def __init__(self, message: str, event_name: str = ""):
        super().__init__(message)
        self.event_name = event_name


class WorkflowCancelledError(DurableError):
    """The run was cancelled; `result()` raises this."""


class WorkflowTimedOutError(DurableError, TimeoutError):
    """The run outlived its `max_duration`; `result()` raises this."""


class ResultTimeoutError(DurableError, TimeoutError):
    """`RunHandle.result(timeout=...)` ran out of time; the run goes on."""


# -- raised by rule actions -------------------------------------------------------


class ActionSkipped(DurableError):
    """Raised by an action that decided not to act (say, `max_attempts` reached).

    The rule's history records the action as skipped, not failed, with the
    message as its result.
    """
