"""One execution of a run: replay what the journal recorded, run the rest.

A run is executed by re-running its workflow function from the top. Each step
call takes the next *position*; if the journal has an outcome for that
position the step returns (or raises) it without running its body, otherwise
the body runs and its outcome is appended with a fenced write. An execution
first claims the run by appending `workflow.executing` at the position it
read, so a duplicate delivery of the same run loses that race and stops.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from .. import failures
from ..codec import roundtrip
from ..errors import (
    ConfigurationError,
    EncodingError,
    FatalError,
    JournalConflictError,
    NonDeterminismError,
)
from ..journal import Event, EventType, Journal
from .context import RunContext, current_execution
from .registry import WorkflowDefinition
from .steps import StepPolicy

logger = logging.getLogger("celery_durable.execution")

# True while a step's body runs: a step it calls runs as a plain function.
_inside_step: ContextVar[bool] = ContextVar("celery_durable_inside_step", default=False)


class FencedOut(BaseException):
    """Another execution owns the run; unwind the workflow without writing.

    A BaseException so that a workflow's `except Exception` cannot swallow it.
    """


class _ReplayState:
    """What the journal says about each position, rebuilt from its events."""

    def __init__(self, events: list[Event]):
        self.started = events[0]
        self.outcomes: dict[int, Event] = {}
        self.failed_attempts: dict[int, int] = {}
        self.attempt = 1
        for event in events:
            self.apply(event)

    def apply(self, event: Event) -> None:
        kind = event.type
        if kind in (EventType.STEP_COMPLETED, EventType.STEP_FAILED):
            position = event.data["position"]
            self.outcomes[position] = event
            self.failed_attempts.pop(position, None)
        elif kind == EventType.STEP_RETRYING:
            self.failed_attempts[event.data["position"]] = event.data["attempt"]
        elif kind == EventType.WORKFLOW_RETRYING:
            # A new attempt replays completed steps and runs failed ones again.
            self.outcomes = {
                p: e for p, e in self.outcomes.items() if e.type == EventType.STEP_COMPLETED
            }
            self.failed_attempts.clear()
            self.attempt = event.data["attempt"]


class Execution:
    def __init__(
        self,
        journal: Journal,
        run_id: str,
        events: list[Event],
        definition: WorkflowDefinition,
        worker: str = "",
    ):
        self.journal = journal
        self.run_id = run_id
        self.definition = definition
        self.worker = worker
        self.position = events[-1].seq
        self.state = _ReplayState(events)
        self.cursor = 0
        self.stop: BaseException | None = None
        self.step_running = False

    # -- the run as a whole ------------------------------------------------------

    def run(self) -> None:
        try:
            self._append(
                EventType.WORKFLOW_EXECUTING, {"worker": self.worker, "attempt": self.state.attempt}
            )
        except FencedOut:
            logger.info("run %s is executed elsewhere; this delivery stops", self.run_id)
            return
        while True:
            outcome = self._call_workflow()
            if outcome is None:
                return
            kind, data = outcome
            try:
                self._append(kind, data)
            except FencedOut:
                return
            if kind != EventType.WORKFLOW_RETRYING:
                return
            self.cursor = 0

    def _call_workflow(self) -> tuple[str, dict[str, Any]] | None:
        """Run the function once; the event that ends this attempt, or None."""
        started = self.state.started.data
        token = current_execution.set(self)
        try:
            if self.definition.is_async:
                result = asyncio.run(self.definition.fn(*started["args"], **started["kwargs"]))
            else:
                result = self.definition.fn(*started["args"], **started["kwargs"])
        except FencedOut:
            return None
        except Exception as exc:
            if isinstance(self.stop, FencedOut):
                return None
            error = self.stop or exc
            if isinstance(error, FatalError) or self.state.attempt > self.definition.max_retries:
                return EventType.WORKFLOW_FAILED, {"error": failures.describe(error)}
            return EventType.WORKFLOW_RETRYING, {
                "attempt": self.state.attempt + 1,
                "error": failures.describe(error),
            }
        finally:
            current_execution.reset(token)
        if isinstance(self.stop, FencedOut):
            return None
        if self.stop is not None:  # the workflow swallowed a non-determinism error
            return EventType.WORKFLOW_FAILED, {"error": failures.describe(self.stop)}
        try:
            where = f"the result of workflow {self.definition.name!r}"
            recorded = roundtrip(result, where=where)
        except EncodingError as exc:
            return EventType.WORKFLOW_FAILED, {"error": failures.describe(exc)}
        return EventType.WORKFLOW_COMPLETED, {"result": recorded}

    def context(self) -> RunContext:
        started = self.state.started
        return RunContext(
            run_id=self.run_id,
            workflow_name=self.definition.name,
            attempt=self.state.attempt,
            started_at=dt.datetime.fromtimestamp(started.ts, tz=dt.UTC),
            idempotency_key=started.data.get("idempotency_key"),
        )

    # -- steps -------------------------------------------------------------------

    def run_step(
        self,
        policy: StepPolicy,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if _inside_step.get():
            return fn(*args, **kwargs)  # a step called by a step is part of its body
        position, attempt, recorded = self._enter_step(policy)
        if recorded is not None:
            return _replay(recorded)
        token = _inside_step.set(True)
        try:
            while True:
                began = time.time()
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    delay = self._record_failure(policy, position, attempt, exc)
                    time.sleep(delay)
                    attempt += 1
                    continue
                return self._record_success(policy, position, attempt, began, result)
        finally:
            _inside_step.reset(token)
            self.step_running = False

    async def run_step_async(
        self,
        policy: StepPolicy,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if _inside_step.get():
            return await fn(*args, **kwargs)
        position, attempt, recorded = self._enter_step(policy)
        if recorded is not None:
            return _replay(recorded)
        token = _inside_step.set(True)
        try:
            while True:
                began = time.time()
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    delay = self._record_failure(policy, position, attempt, exc)
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                return self._record_success(policy, position, attempt, began, result)
        finally:
            _inside_step.reset(token)
            self.step_running = False

    def _enter_step(self, policy: StepPolicy) -> tuple[int, int, Event | None]:
        """Take the next position: (position, attempt to run, recorded outcome)."""
        if self.stop is not None:
            raise self.stop
        if self.step_running:
            raise ConfigurationError(
                f"step {policy.name!r} started while another step of run {self.run_id} "
                "was still running; steps of one workflow must run one at a time "
                "(no asyncio.gather of steps)"
            )
        position = self.cursor
        self.cursor += 1
        recorded = self.state.outcomes.get(position)
        if recorded is not None:
            if recorded.data["name"] != policy.name:
                self.stop = NonDeterminismError(
                    f"run {self.run_id} of workflow {self.definition.name!r} is not "
                    f"deterministic: at position {position} the journal recorded step "
                    f"{recorded.data['name']!r} but the code now calls step {policy.name!r}"
                )
                raise self.stop
            return position, 0, recorded
        self.step_running = True
        return position, self.state.failed_attempts.get(position, 0) + 1, None

    def _record_success(
        self, policy: StepPolicy, position: int, attempt: int, began: float, result: Any
    ) -> Any:
        try:
            # Hand back what a replay will return (tuples become lists, ...).
            recorded = roundtrip(result, where=f"the result of step {policy.name!r}")
        except EncodingError as exc:
            self._append(
                EventType.STEP_FAILED,
                {
                    "position": position,
                    "name": policy.name,
                    "attempt": attempt,
                    "error": failures.describe(exc),
                },
            )
            raise FatalError(str(exc)) from None
        self._append(
            EventType.STEP_COMPLETED,
            {
                "position": position,
                "name": policy.name,
                "attempt": attempt,
                "result": recorded,
                "started_at": began,
                "duration": time.time() - began,
            },
        )
        return recorded

    def _record_failure(
        self, policy: StepPolicy, position: int, attempt: int, exc: Exception
    ) -> float:
        """Record a failed attempt; return the delay before the next, or raise."""
        data = {
            "position": position,
            "name": policy.name,
            "attempt": attempt,
            "error": failures.describe(exc),
        }
        if isinstance(exc, FatalError) or attempt > policy.max_retries:
            self._append(EventType.STEP_FAILED, data)
            raise exc
        delay = policy.delay_before(attempt, exc)
        self._append(EventType.STEP_RETRYING, {**data, "delay": delay})
        logger.info(
            "run %s: step %s failed (attempt %d), retrying in %.3gs: %r",
            self.run_id,
            policy.name,
            attempt,
            delay,
            exc,
        )
        return delay

    # -- the journal ---------------------------------------------------------------

    def _append(self, kind: str, data: dict[str, Any]) -> None:
        try:
            (event,) = self.journal.append(self.run_id, self.position, [(kind, data)])
        except JournalConflictError as exc:
            logger.warning("%s; this execution stops", exc)
            self.stop = FencedOut()
            raise self.stop from None
        self.position = event.seq
        self.state.apply(event)


def _replay(recorded: Event) -> Any:
    """The outcome a step had when it first ran: its result, or its error raised."""
    if recorded.type == EventType.STEP_COMPLETED:
        return recorded.data["result"]
    raise failures.rebuild(recorded.data["error"])
