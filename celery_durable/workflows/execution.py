"""One execution of a run: replay what the journal recorded, run the rest.

A run is executed by calling its workflow function from the top. Every step,
sleep, event wait and child start takes the next *position*; if the journal
has an outcome for that position it is returned (or raised) at once, otherwise
the work is done and its outcome appended with a fenced write. An execution
first claims the run by appending `workflow.executing` at the position it
read, so a duplicate delivery of the same run loses that race and stops.

When the workflow must wait (a sleep, an event, a child run) the execution
records why, sets a timer if there is a due time, and unwinds: the Celery task
ends and no worker slot is held. Whatever wakes the run (the timer poller,
`send_event`, a child's end) sends the run task again, and the next execution
replays to the same point and goes on.

Steps dispatched as their own Celery tasks (`@step(queue=...)`, `.spawn()`,
`.map()`, `asyncio.gather()` in async workflows) are spawned, sent and
gathered by `fanout.FanOut`; their positions and outcomes go through the
same journal and the same `_ReplayState`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from .. import failures
from ..codec import Packed
from ..errors import (
    ConfigurationError,
    EncodingError,
    EventTimeoutError,
    FatalError,
    InboxChangedError,
    JournalConflictError,
    NonDeterminismError,
    RunEventLimitError,
    WorkflowCancelledError,
    WorkflowTimedOutError,
)
from ..journal import Event, EventType
from ..journal.journal import Appended, StepsWrite
from ..limits import packed_bounded, roundtrip_bounded
from . import interruptions
from .blocking import block
from .context import RunContext, current_execution
from .fanout import FanOut
from .interruptions import Interrupted, is_interruption, journal_failed, trouble_log
from .outcomes import child_event_name, finish
from .registry import WorkflowDefinition
from .step_policy import StepPolicy

if TYPE_CHECKING:
    from redis.client import Pipeline

    from ..extension import DurableExtension

logger = logging.getLogger("celery_durable.execution")

T = TypeVar("T")

# A step retry due sooner than this waits in the pool process; a later one
# suspends the run (status `sleeping`) on a durable timer, holding no slot.
INLINE_RETRY_DELAY = 1.0

# True while a step's body runs: a step it calls runs as a plain function.
_inside_step: ContextVar[bool] = ContextVar("celery_durable_inside_step", default=False)


# Control flow that unwinds the workflow function. BaseExceptions, so that a
# workflow's `except Exception` cannot swallow them.
class FencedOut(BaseException):
    """Another execution owns the run; stop without writing."""


class Suspended(BaseException):
    """The run waits; its suspension is recorded and its timer set."""


class EndOfHistory(Suspended):
    """A dry replay reached the end of the recorded history, in agreement with it."""


class _Cancelled(BaseException):
    pass


class _TimedOut(BaseException):
    pass


_COMMAND_KIND: dict[str, str] = {
    EventType.STEP_COMPLETED: "step",
    EventType.STEP_FAILED: "step",
    EventType.STEP_DISPATCHED: "step",
    EventType.SLEEP_STARTED: "sleep",
    EventType.EVENT_WAITING: "wait",
    EventType.EVENT_RECEIVED: "wait",
    EventType.EVENT_TIMED_OUT: "wait",
    EventType.CHILD_STARTED: "child",
}


class _ReplayState:
    """What the journal says about each position, rebuilt from its events."""

    def __init__(self, events: list[Event]):
        self.started = events[0]
        self.outcomes: dict[int, Event] = {}  # final: returned or raised on replay
        self.pending: dict[int, Event] = {}  # a sleep, a wait or a dispatched step begun there
        self.failed_attempts: dict[int, int] = {}
        self.retry_at: dict[int, float] = {}  # when a failed step is due to run again
        self.consumed: set[str] = set()  # inbox entries already received
        self.patches: set[str] = set()  # change ids `patched()` found new code at
        self.attempt = 1
        for event in events:
            self.apply(event)

    def apply(self, event: Event) -> None:
        kind = event.type
        if kind in (EventType.SLEEP_STARTED, EventType.EVENT_WAITING, EventType.STEP_DISPATCHED):
            self.pending[event.data["position"]] = event
        elif kind in _COMMAND_KIND:
            position = event.data["position"]
            self.outcomes[position] = event
            self.pending.pop(position, None)
            self.failed_attempts.pop(position, None)
            self.retry_at.pop(position, None)
            if kind == EventType.EVENT_RECEIVED:
                self.consumed.add(event.data["inbox_id"])
        elif kind == EventType.STEP_RETRYING:
            self.failed_attempts[event.data["position"]] = event.data["attempt"]
            if event.data.get("retry_at") is not None:
                self.retry_at[event.data["position"]] = event.data["retry_at"]
        elif kind == EventType.WORKFLOW_RETRYING:
            # A new attempt replays all it can and runs failed steps again.
            self.outcomes = {
                p: e for p, e in self.outcomes.items() if e.type != EventType.STEP_FAILED
            }
            self.failed_attempts.clear()
            self.retry_at.clear()
            self.attempt = event.data["attempt"]
        elif kind == EventType.PATCH_MARKED:
            self.patches.add(event.data["change_id"])

    def reaches(self, position: int) -> bool:
        """Did the recorded history get to `position` or past it (under some code)?"""
        return any(
            p >= position
            for positions in (self.outcomes, self.pending, self.failed_attempts)
            for p in positions
        )

    def recorded_at(self, position: int) -> Event | None:
        return self.outcomes.get(position) or self.pending.get(position)


class Execution:
    def __init__(
        self,
        ext: DurableExtension,
        run_id: str,
        events: list[Event],
        definition: WorkflowDefinition,
        worker: str = "",
        takeover: str | None = None,
        *,
        claimed: bool = False,
    ):
        self.ext = ext
        self.journal = ext.journal
        self.clock = ext.clock
        self.run_id = run_id
        self.definition = definition
        self.worker = worker
        self.position = events[-1].seq
        self.state = _ReplayState(events)
        self.parent: str | None = self.state.started.data.get("parent")
        self.deadline = deadline_of(definition, self.state.started)
        self.cursor = 0
        self.stop: BaseException | None = None
        self.cancel_requested = False
        self.step_running = False
        self.owner = owner_of(worker)
        self.worker_runs_key = ext.keys.worker_runs(worker)
        self.takeover = takeover  # the dead owner this execution replaces
        self.claimed_as: str | None = None  # set once this execution tried to claim the run
        if claimed:  # claimed as the run was read (`Journal.load_claiming`): its last event
            self.claimed_as = self.owner
        # Events done but not written yet (the last inline step's completion):
        # they go with the next write, before anything else runs.
        self.held: list[tuple[EventType, dict[str, Any]]] = []
        self.fanout = FanOut(self)
        # `patch.marked` events to write with the next append (no round trip of their own).
        self.markers: list[tuple[EventType, dict[str, Any]]] = []
        # A dry replay (`replay.py`): runs no step body and writes nothing; it
        # stops where the recorded history ends.
        self.dry = False

    # -- the run as a whole ------------------------------------------------------

    def run(self) -> None:
        """Claim the run (unless it was claimed as it was read), execute it, end it."""
        if self.claimed_as is not None:  # and filed under this worker in that write
            self._execute()
            return
        # The claim also files the run under this worker, in the same round
        # trip, so that a live worker takes it over should this one die.
        executing = {"worker": self.worker, "pid": os.getpid(), "attempt": self.state.attempt}
        if self.takeover:
            executing["takeover"] = self.takeover

        def file_under_worker(pipe: Pipeline) -> None:
            # Sent before the claim: a run is never claimed unfiled (should
            # this fail and the claim pass, it is filed again before going on).
            if self.takeover:  # first: the dead owner may be this worker's lost child
                dead_worker = self.takeover.rsplit("/", 1)[0]
                pipe.srem(self.ext.keys.worker_runs(dead_worker), self.run_id)
            pipe.sadd(self.worker_runs_key, self.run_id)

        self.claimed_as = self.owner
        try:
            self._append_many(
                [(EventType.WORKFLOW_EXECUTING, executing)],
                meta={"owner": self.owner},
                extra=file_under_worker,
            )
        except FencedOut:
            logger.info("run %s is executed elsewhere; this delivery stops", self.run_id)
            self._release()
            return
        except RunEventLimitError as exc:  # it suspended at its limit: it cannot go on
            try:
                finish(
                    self.ext,
                    self.run_id,
                    self.position,
                    EventType.WORKFLOW_FAILED,
                    error=exc,
                    parent=self.parent,
                    workflow_name=self.definition.name,
                    worker=self.worker,
                )
            except JournalConflictError:
                self._release()
            return
        self._execute()

    def _execute(self) -> None:
        """Call the workflow (again, for each new attempt) and record how it ended."""
        while True:
            outcome = self._call_workflow()
            if outcome is None:
                if isinstance(self.stop, FencedOut):
                    self._release()
                return
            kind, result, error = outcome
            try:
                self._check_memory_or_outage(error)
                if isinstance(error, NonDeterminismError):  # not the run's fault: wait for code
                    self._write_held()  # what was done stays done
                    block(
                        self.ext,
                        self.run_id,
                        self.position,
                        error,
                        workflow_name=self.definition.name,
                        worker=self.worker,
                    )
                    return
                if kind == EventType.WORKFLOW_RETRYING:
                    assert error is not None  # an attempt is retried for an error only
                    try:
                        self._append(
                            kind,
                            {"attempt": self.state.attempt + 1, "error": self._describe(error)},
                        )
                        self.cursor = 0
                        self.fanout.reset()
                        continue
                    except RunEventLimitError as exc:  # no room for another attempt
                        kind, error = EventType.WORKFLOW_FAILED, exc
                self._finish(kind, result, error)
            except JournalConflictError as exc:
                if exc.actual < exc.expected:
                    raise self._rewound(exc) from None
                logger.warning("run %s: %s; this execution stops", self.run_id, exc)
                self._release()
            except FencedOut as exc:
                logger.warning("run %s: %s; this execution stops", self.run_id, exc)
                self._release()
            except Exception as exc:
                if not is_interruption(exc):
                    raise
                raise Interrupted(exc, self.claimed_as) from None
            return

    def _finish(self, kind: EventType, result: Any, error: BaseException | None) -> None:
        """End the run, writing what is held in the same append."""
        held, self.held = self.held, []
        try:
            finish(
                self.ext,
                self.run_id,
                self.position,
                kind,
                result=result,
                error=error,
                parent=self.parent,
                workflow_name=self.definition.name,
                worker=self.worker,
                before=list(held),
            )
        except RunEventLimitError as exc:
            # What was held took the run past its limit: it fails, as it would have
            # had those events been written on their own.
            logger.warning("%s", exc)
            self._finish(EventType.WORKFLOW_FAILED, None, exc)
        except Exception as exc:
            if not held or not is_interruption(exc):
                raise
            # Redis trouble at the very end: what was done is written first, through
            # the trouble, so that executing the run again does not do it again.
            self.held = held
            self._write_held()
            raise

    def dry_run(self) -> NonDeterminismError | None:
        """Replay the history against the code, running no step body and writing nothing.

        Returns where the code diverges from the history, or None when it
        agrees up to where the history ends (`replay.py` builds on this).
        """
        self.dry = True
        self.deadline = None  # what is checked is the code, not the clock
        self.cancel_requested = False
        outcome = self._call_workflow()
        if isinstance(self.stop, NonDeterminismError):
            return self.stop
        if outcome is None:
            return None
        kind, _, error = outcome
        if isinstance(error, NonDeterminismError):
            return error
        # The code ends (returns, or raises in a history of one attempt) where
        # the history went on: the run would end, or fail, where it did not.
        ended = kind == EventType.WORKFLOW_COMPLETED or self.state.attempt == 1
        if ended and self.state.reaches(self.cursor):
            was = self.state.recorded_at(self.cursor)
            recorded = "" if was is None else f"{_COMMAND_KIND[was.type]} {was.data['name']!r}"
            does = "returns" if error is None else f"raises {type(error).__name__}: {error}"
            return NonDeterminismError(
                f"run {self.run_id} of workflow {self.definition.name!r} is not "
                f"deterministic: the code now {does} at position {self.cursor}, where the "
                f"journal recorded {recorded or 'more'}",
                position=self.cursor,
                recorded=recorded,
                asked="return" if error is None else f"raise {type(error).__name__}",
            )
        return None

    def _check_memory_or_outage(self, error: BaseException | None) -> None:
        """An infrastructure error that reached the workflow is not its outcome."""
        if error is not None and journal_failed(self.ext.redis, error):
            self._write_held()  # what is done stays done (through Redis trouble)
            raise Interrupted(error, self.claimed_as)

    def _call_workflow(self) -> tuple[EventType, Any, BaseException | None] | None:
        """Run the function once: how this attempt ended, or None if it did not."""
        started = self.state.started.data
        token = current_execution.set(self)
        try:
            self._check_boundary()
            if self.definition.is_async:
                result = asyncio.run(self.definition.fn(*started["args"], **started["kwargs"]))
            else:
                result = self.definition.fn(*started["args"], **started["kwargs"])
        except (FencedOut, Suspended):
            return None
        except Interrupted:
            raise
        except _Cancelled:
            cancelled = WorkflowCancelledError(f"run {self.run_id} was cancelled")
            return EventType.WORKFLOW_CANCELLED, None, cancelled
        except _TimedOut:
            return EventType.WORKFLOW_TIMED_OUT, None, self._timed_out_error()
        except Exception as exc:
            if isinstance(self.stop, FencedOut | Suspended):
                return None
            if isinstance(self.stop, Interrupted):  # the workflow swallowed it
                raise self.stop from None
            error = self.stop or exc
            if isinstance(error, FatalError) or self.state.attempt > self.definition.max_retries:
                return EventType.WORKFLOW_FAILED, None, error
            return EventType.WORKFLOW_RETRYING, None, error
        finally:
            current_execution.reset(token)
        if isinstance(self.stop, FencedOut | Suspended):
            return None  # the workflow swallowed our unwinding; nothing more to write
        if isinstance(self.stop, Interrupted):
            raise self.stop
        if self.stop is not None:  # the workflow swallowed a non-determinism error
            return EventType.WORKFLOW_FAILED, None, self.stop
        try:
            what = f"the result of workflow {self.definition.name!r}"
            recorded = roundtrip_bounded(result, self.ext.settings.max_payload_bytes, what=what)
            return EventType.WORKFLOW_COMPLETED, recorded, None
        except EncodingError as exc:
            return EventType.WORKFLOW_FAILED, None, exc

    def context(self) -> RunContext:
        started = self.state.started
        return RunContext(
            run_id=self.run_id,
            workflow_name=self.definition.name,
            attempt=self.state.attempt,
            started_at=dt.datetime.fromtimestamp(started.ts, tz=dt.UTC),
            idempotency_key=started.data.get("idempotency_key"),
            scheduled_at=started.data.get("scheduled_at"),
            schedule=started.data.get("schedule"),
        )

    def _timed_out_error(self) -> WorkflowTimedOutError:
        return WorkflowTimedOutError(
            f"run {self.run_id} of workflow {self.definition.name!r} exceeded its "
            f"max_duration of {self.definition.max_duration}s"
        )

    # -- positions -------------------------------------------------------------------

    def _check_boundary(self) -> None:
        """Stop here if the run was cancelled or ran out of time."""
        if self.stop is not None:
            raise self.stop
        if self.cancel_requested:
            raise _Cancelled
        if self.deadline is not None and self.clock.now() >= self.deadline:
            raise _TimedOut

    @property
    def is_async(self) -> bool:
        """Is the workflow an `async def` one (where dispatched steps are awaited)?"""
        return self.definition.is_async

    def inside_step(self) -> bool:
        """Is a step's body running (where steps it calls are plain functions)?"""
        return _inside_step.get()

    def _take(self, kind: str, name: str) -> tuple[int, Event | None]:
        """The next position, and what the journal recorded there (if anything).

        Steps spawned before are sent first: they run while this goes on.
        A step's completion held back is written first, unless a sleep
        comes next (whose write takes it along).
        """
        if self.fanout.unsent:
            self._check_boundary()
            self.fanout.flush()
        if kind != "sleep":
            self._write_held()
        return self._position(kind, name)

    def _write_held(self) -> None:
        """Write the events held back, now (an append of nothing more)."""
        if self.held:
            self._append_many([])

    def _position(self, kind: str, name: str) -> tuple[int, Event | None]:
        """`_take` without sending what was spawned (a spawn itself)."""
        self._check_boundary()
        if self.step_running:
            raise ConfigurationError(
                f"{kind} {name!r} began while a step of run {self.run_id} was still running "
                "inline; to run steps in parallel, spawn them (step.spawn, step.map) or "
                "start them together in one asyncio.gather()"
            )
        position = self.cursor
        self.cursor += 1
        recorded = self.state.recorded_at(position)
        if recorded is not None:
            recorded_kind = _COMMAND_KIND[recorded.type]
            if (recorded_kind, recorded.data["name"]) != (kind, name):
                was, now = f"{recorded_kind} {recorded.data['name']!r}", f"{kind} {name!r}"
                self.stop = NonDeterminismError(
                    f"run {self.run_id} of workflow {self.definition.name!r} is not "
                    f"deterministic: at position {position} the journal recorded "
                    f"{was} but the code now calls {now}",
                    position=position,
                    recorded=was,
                    asked=now,
                )
                raise self.stop
        elif self.dry:
            self._end_of_history()
        return position, recorded

    def _end_of_history(self) -> None:
        """A dry replay got to where the history ends: what follows would be new work."""
        self.stop = EndOfHistory()
        raise self.stop

    # -- patches -------------------------------------------------------------------

    def patched(self, change_id: str, *, deprecated: bool = False) -> bool:
        """Does this run take the code path of change `change_id` (see `patches.py`)?

        True when the history has a marker for it, or has not got this far
        (the new code decides: a marker is recorded with the next append);
        False when the history went past this point under code without it.
        Costs no round trip and no position.
        """
        if _inside_step.get():
            raise ConfigurationError(
                f"patched({change_id!r}) was called inside a step's body; call it in the "
                "workflow function, around the steps it chooses between"
            )
        if change_id in self.state.patches:
            return True
        position = self.cursor
        if self.state.reaches(position):
            if deprecated:
                was = self.state.recorded_at(position)
                self.stop = NonDeterminismError(
                    f"run {self.run_id} of workflow {self.definition.name!r} went past "
                    f"deprecated_patch({change_id!r}) (position {position}) under code "
                    "without the patch; keep patched() there until such runs have finished",
                    position=position,
                    recorded=""
                    if was is None
                    else f"{_COMMAND_KIND[was.type]} {was.data['name']!r}",
                    asked=f"patch {change_id!r}",
                )
                raise self.stop
            return False
        self.state.patches.add(change_id)
        self.markers.append(
            (EventType.PATCH_MARKED, {"change_id": change_id, "position": position})
        )
        return True

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
        if policy.dispatched:
            return self.fanout.call(policy, args, kwargs)
        position, recorded = self._take("step", policy.name)
        if recorded is not None:
            return _replay(recorded)
        wait = self._until_retry(position)
        if wait > 0:  # time.sleep(0) is a system call, on every step
            time.sleep(wait)
        attempt = self.state.failed_attempts.get(position, 0) + 1
        self.step_running = True
        token = _inside_step.set(True)
        try:
            while True:
                began = time.time()
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    time.sleep(self._record_failure(policy, position, attempt, exc))
                    self._check_boundary()
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
        position, recorded = self._take("step", policy.name)
        if recorded is not None:
            return _replay(recorded)
        return await self._run_step_async_at(position, policy, fn, args, kwargs)

    async def _run_step_async_at(
        self,
        position: int,
        policy: StepPolicy,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run an async step inline at `position` (taken, and not recorded)."""
        if self.step_running:
            raise ConfigurationError(
                f"step {policy.name!r} began while a step of run {self.run_id} was still "
                "running inline; steps awaited together (asyncio.gather) are dispatched "
                "together, so start them at once, or spawn them"
            )
        wait = self._until_retry(position)
        if wait > 0:
            await asyncio.sleep(wait)
        attempt = self.state.failed_attempts.get(position, 0) + 1
        self.step_running = True
        token = _inside_step.set(True)
        try:
            while True:
                began = time.time()
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    await asyncio.sleep(self._record_failure(policy, position, attempt, exc))
                    self._check_boundary()
                    attempt += 1
                    continue
                return self._record_success(policy, position, attempt, began, result)
        finally:
            _inside_step.reset(token)
            self.step_running = False

    def _record_success(
        self, policy: StepPolicy, position: int, attempt: int, began: float, result: Any
    ) -> Any:
        try:
            # Hand back what a replay will return (tuples become lists, ...).
            recorded = packed_bounded(
                result,
                self.ext.settings.max_payload_bytes,
                what=f"the result of step {policy.name!r}",
            )
        except EncodingError as exc:
            self._append(
                EventType.STEP_FAILED,
                {
                    "position": position,
                    "name": policy.name,
                    "attempt": attempt,
                    "error": self._describe(exc),
                },
            )
            raise FatalError(str(exc)) from None
        # Held, and written with what comes next (the next step's write comes
        # before its body runs; the run's end or suspension takes it along).
        self.held.append(
            (
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
        )
        return recorded.value if type(recorded) is Packed else recorded

    def _record_failure(
        self, policy: StepPolicy, position: int, attempt: int, exc: Exception
    ) -> float:
        """Record a failed attempt; return the (short) delay before the next, or raise.

        A longer delay suspends the run until the retry is due (raises
        `Suspended`); a cancel or the deadline stops it at every retry. An
        error of the infrastructure is not the step's failure: nothing is
        recorded and the execution is interrupted, to go on when Redis is back.
        """
        if journal_failed(self.ext.redis, exc):
            self.stop = Interrupted(exc, self.claimed_as)
            raise self.stop from None
        data = {
            "position": position,
            "name": policy.name,
            "attempt": attempt,
            "error": self._describe(exc),
        }
        if isinstance(exc, FatalError) or attempt > policy.max_retries:
            self._append(EventType.STEP_FAILED, data)
            raise exc
        delay = policy.delay_before(attempt, exc)
        retry_at = self.clock.now() + delay
        retrying = (EventType.STEP_RETRYING, {**data, "delay": delay, "retry_at": retry_at})
        logger.info(
            "run %s: step %s failed (attempt %d), retrying in %.3gs: %r",
            self.run_id,
            policy.name,
            attempt,
            delay,
            exc,
        )
        if delay > INLINE_RETRY_DELAY:
            self._suspend("sleeping", retry_at, [retrying])
        self._append(*retrying)
        self._check_boundary()
        return delay

    def _until_retry(self, position: int) -> float:
        """Before a step's next attempt: suspend until it is due, or the seconds left.

        The retry of a step replayed here may not be due yet (the run was
        woken early, by its deadline timer or a stray message).
        """
        retry_at = self.state.retry_at.get(position)
        if retry_at is None:
            return 0.0
        left = retry_at - self.clock.now()
        if left > INLINE_RETRY_DELAY:
            self._suspend("sleeping", retry_at, [])
        return max(0.0, left)

    # -- sleeping and waiting ------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        position, recorded = self._take("sleep", "sleep")
        if recorded is None:
            until = self.clock.now() + seconds
            started = (
                EventType.SLEEP_STARTED,
                {"position": position, "name": "sleep", "seconds": seconds, "until": until},
            )
            if seconds <= 0:
                self._append(*started)
                return
            self._suspend("sleeping", until, [started])
        until = recorded.data["until"]
        if self.clock.now() < until:
            self._suspend("sleeping", until, [])

    def wait_for_event(self, name: str, timeout: float | None) -> Any:
        position, recorded = self._take("wait", name)
        if recorded is not None and recorded.type == EventType.EVENT_RECEIVED:
            return recorded.data["payload"]
        if recorded is not None and recorded.type == EventType.EVENT_TIMED_OUT:
            raise self._event_timeout(name)
        if recorded is None:
            timeout_at = None if timeout is None else self.clock.now() + timeout
        else:
            timeout_at = recorded.data["timeout_at"]
        while True:
            inbox = self._read(lambda: self.journal.inbox(self.run_id))
            for entry in inbox:
                if entry.name == name and entry.id not in self.state.consumed:
                    self._append(
                        EventType.EVENT_RECEIVED,
                        {
                            "position": position,
                            "name": name,
                            "payload": entry.payload,
                            "inbox_id": entry.id,
                        },
                    )
                    return entry.payload
            if timeout_at is not None and self.clock.now() >= timeout_at:
                self._append(EventType.EVENT_TIMED_OUT, {"position": position, "name": name})
                raise self._event_timeout(name)
            waiting = (
                []
                if recorded is not None
                else [
                    (
                        EventType.EVENT_WAITING,
                        {
                            "position": position,
                            "name": name,
                            "timeout_at": timeout_at,
                        },
                    )
                ]
            )
            try:
                self._suspend(
                    "waiting", timeout_at, waiting, meta={"waiting_for": name}, inbox_len=len(inbox)
                )
            except InboxChangedError:
                continue  # an event came while we decided to wait: look again

    def _event_timeout(self, name: str) -> EventTimeoutError:
        return EventTimeoutError(
            f"run {self.run_id}: no event {name!r} came in time", event_name=name
        )

    def _suspend(
        self,
        status: str,
        wake_at: float | None,
        events: list[tuple[EventType, dict[str, Any]]],
        *,
        meta: dict[str, str] | None = None,
        inbox_len: int | None = None,
        steps: StepsWrite | None = None,
        extra: Callable[[Pipeline], object] | None = None,
        after: Callable[[], None] | None = None,
    ) -> NoReturn:
        """Record that the run waits, set its timers, and unwind.

        `steps` and `extra` go with the append (dispatched steps: their
        record, their timers); `after` runs once it is written (sending
        their messages), unless the run was asked to stop.
        """
        events = [*events, (EventType.WORKFLOW_SUSPENDED, {"status": status, "until": wake_at})]
        # The due times also go in the meta: they tell a stray message for a
        # run not yet due to go away, and let a recovery set the timers again.
        meta = {**(meta or {}), "wake_at": _text(wake_at), "deadline_at": _text(self.deadline)}

        def set_timers(pipe: Pipeline) -> None:
            timers = self.ext.timers
            timers.schedule(self.run_id, wake_at=wake_at, deadline_at=self.deadline, pipe=pipe)
            # Timers of the run's past: its first dispatch, an earlier wake kept to check on it.
            timers.drop(self.run_id, wake=wake_at is None, deadline=False, pipe=pipe)
            if extra is not None:
                extra(pipe)

        # The timers go first, in the same round trip: a timer whose suspension
        # did not happen fires for nothing, a suspension without its timer
        # would never wake. Off this worker's list only once both are written:
        # should the worker die in between, its recovery sets the timers again.
        appended = self._append_many(
            events, meta=meta, inbox_len=inbox_len, extra=set_timers, steps=steps
        )
        if appended.cancel_requested:
            raise _Cancelled
        if after is not None:
            after()
        self._release()
        self.stop = Suspended()
        raise self.stop

    # -- child runs ----------------------------------------------------------------

    def start_child(
        self, name: str, args: list[Any], kwargs: dict[str, Any], idempotency_key: str | None
    ) -> str:
        """Start a child run once: replays return the id recorded the first time."""
        position, recorded = self._take("child", name)
        if recorded is not None:
            return str(recorded.data["child_run_id"])
        child_id = f"{self.run_id}.{position}"
        data = {
            "name": name,
            "args": args,
            "kwargs": kwargs,
            "idempotency_key": idempotency_key,
            "parent": self.run_id,
        }
        redispatch_at = self.clock.now() + self.ext.settings.redispatch_after
        created = self._read(
            lambda: self.journal.create(
                child_id,
                name,
                data,
                meta={"parent": self.run_id},
                timer=(self.ext.timers.dispatch_member(child_id), redispatch_at),
            )
        )
        if created is not None:
            self.ext.launch(child_id)  # a message that cannot be sent now is sent by the timer
        self._append(
            EventType.CHILD_STARTED, {"position": position, "name": name, "child_run_id": child_id}
        )
        return child_id

    def child_result(self, child_id: str, timeout: float | None) -> Any:
        outcome = self.wait_for_event(child_event_name(child_id), timeout)
        if outcome["status"] == "completed":
            return outcome["result"]
        raise failures.rebuild(outcome["error"])

    # -- the journal ---------------------------------------------------------------

    def _append(self, kind: EventType, data: dict[str, Any]) -> None:
        self._append_many([(kind, data)])

    def _append_many(
        self,
        events: list[tuple[EventType, dict[str, Any]]],
        *,
        meta: dict[str, str] | None = None,
        inbox_len: int | None = None,
        extra: Callable[[Pipeline], object] | None = None,
        steps: StepsWrite | None = None,
    ) -> Appended:
        if self.dry:
            self._end_of_history()
        if self.held:  # first, in their order; a StepsWrite's indexes count them
            if steps is not None and steps.dispatch:
                shift = len(self.held)
                moved = [(index + shift, p, task) for index, p, task in steps.dispatch]
                steps = dataclasses.replace(steps, dispatch=moved)
            events = [*self.held, *events]
        if self.markers:  # last: a StepsWrite counts the events before them
            events = [*events, *self.markers]
        attempt = 0
        while True:  # through Redis trouble: the same fenced append, again, until it is taken
            try:
                appended = self.journal.append(
                    self.run_id,
                    self.position,
                    events,
                    meta=meta,
                    inbox_len=inbox_len,
                    extra=extra,
                    steps=steps,
                )
                break
            except JournalConflictError as exc:
                if exc.actual < exc.expected:
                    self.stop = self._rewound(exc)
                    raise self.stop from None
                logger.warning("%s; this execution stops", exc)
                self.stop = FencedOut()
                raise self.stop from None
            except RunEventLimitError as exc:
                # Every later write would be refused too: the run fails with this
                # error, even if the workflow catches it.
                logger.warning("%s", exc)
                self.stop = exc
                raise
            except Exception as exc:
                if not is_interruption(exc):
                    raise
                # Sending it again is safe: the fence refuses a write at a moved
                # position, and one that landed before its reply was lost is
                # recognised as ours. Executing the run again instead would run
                # the step whose result this may be once more.
                trouble_log.report(exc, f"run {self.run_id}: waiting to write to its journal")
                time.sleep(interruptions.backoff(attempt))
                attempt += 1
        self.held = []
        self.markers = []
        for event in appended.events:
            self.position = event.seq
            self.state.apply(event)
        self.cancel_requested = self.cancel_requested or appended.cancel_requested
        if appended.extra_error is not None and extra is not None:
            self._complete(extra, appended.extra_error)
        return appended

    def _describe(self, error: BaseException) -> dict[str, Any]:
        return failures.describe(error, limit=self.ext.settings.max_text_bytes)

    def _complete(self, extra: Callable[[Pipeline], object], error: Exception) -> None:
        """Write again what failed next to an append that happened, until it is written.

        The append moved the run on (claimed it, suspended it); what went with
        it (its filing under this worker, its timers) is what recovery relies
        on, so the execution does not go on without it. Those writes are
        idempotent.
        """
        attempt = 0
        while True:
            trouble_log.report(error, f"run {self.run_id}: writing again what an append needs")
            time.sleep(interruptions.backoff(attempt))
            attempt += 1
            try:
                pipe = self.ext.redis.pipeline(transaction=False)
                extra(pipe)
                pipe.execute()
                return
            except Exception as exc:
                if not is_interruption(exc):
                    raise
                error = exc

    def _read(self, read: Callable[[], T]) -> T:
        """Call `read` (a read, or a write that is whole or nothing); Redis trouble interrupts."""
        if self.dry:  # a wait or a child's start: where the recorded history ends
            self._end_of_history()
        try:
            return read()
        except Exception as exc:
            if not is_interruption(exc):
                raise
            self.stop = Interrupted(exc, self.claimed_as)
            raise self.stop from None

    def _rewound(self, conflict: JournalConflictError) -> Interrupted:
        """The journal is behind what this execution wrote: Redis lost acknowledged writes."""
        logger.warning(
            "run %s: the journal is at position %d, behind the %d this execution wrote: Redis "
            "lost acknowledged writes (a restart without fsync, a failover?); executing the run "
            "again from what the journal holds",
            self.run_id,
            conflict.actual,
            conflict.expected,
        )
        return Interrupted(conflict, self.claimed_as)

    def _release(self) -> None:
        """Take the run off this worker's list: it is no longer ours to finish.

        Best effort: a run left on the list of a live worker is harmless (its
        recovery, should it die, finds the run moved on).
        """
        try:
            self.ext.redis.srem(self.worker_runs_key, self.run_id)
        except Exception as exc:
            if not is_interruption(exc):
                raise
            trouble_log.report(exc, f"run {self.run_id}: taking it off worker {self.worker}")


def owner_of(worker: str) -> str:
    """How an execution of this process names itself as a run's owner (meta `owner`)."""
    return f"{worker}/{os.getpid()}"


def _text(when: float | None) -> str:
    return "" if when is None else repr(when)


def deadline_of(definition: WorkflowDefinition, started: Event) -> float | None:
    """When the run times out, in clock seconds; None without a max_duration."""
    if definition.max_duration is None:
        return None
    return started.ts + definition.max_duration


def _replay(recorded: Event) -> Any:
    """The outcome a step had when it first ran: its result, or its error raised."""
    if recorded.type == EventType.STEP_COMPLETED:
        return recorded.data["result"]
    raise failures.rebuild(recorded.data["error"])
