"""The Celery task that runs one dispatched step's body, and what keeps it going.

A step message carries (run id, position, attempt) and the journal's name;
its task id is the one the run's record of the step names. A delivery
first asks the record whether it may run the body (`StepRecords.start`: one
round trip that also returns the arguments from the journal): a duplicate,
a late redelivery, a message replaced by a re-send, or a step of an ended
run is dropped there. The body runs with the step's retry policy, where
the step runs: a wait of up to a second in place, a longer one on a
durable `step:` timer that sends a new message when due (the task ends,
holding nothing). The outcome is recorded once (`StepRecords.record_outcome`,
a second round trip); the one that completes what the run waits for wakes it.

What keeps a step going when things fail, all through a compare-and-set on
its record (the message it names, and who runs it):

- its pool process died (`on_task_lost`, from the worker's main process):
  sent again by its timer `POOL_GRACE` seconds later, once the pool has
  replaced the process; a hard time limit is a failed attempt;
- its worker died (`recover_held`, from the recovery of that worker's
  record of held messages, see `monitor.py`): sent again, at once, with no
  wait for the broker's visibility timeout;
- its message was lost, or its worker died without a record of it: its
  `step:` timer (set when it was dispatched, moved on while it runs on a
  live worker) sends it again (`fire_timers`, from the timer poller).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery, Task
from celery.exceptions import TimeLimitExceeded

from .. import failures
from ..errors import (
    ConfigurationError,
    EncodingError,
    FatalError,
    StepNotFoundError,
)
from ..extension import DurableExtension, extension_for
from ..journal.events import FINAL_STATUSES, EventType
from ..journal.identity import JournalId
from ..journal.steps import RUN, StepStart, StepState
from ..limits import roundtrip_bounded
from ..timers.store import ClaimedTimer
from ..workflows import dispatched
from ..workflows.context import RunContext, current_step_run
from ..workflows.dispatched import STEP_TASK_NAME, StepMessage
from ..workflows.execution import INLINE_RETRY_DELAY
from ..workflows.interruptions import backoff, is_interruption, journal_failed, trouble_log
from ..workflows.step_policy import StepPolicy
from ..workflows.steps import lookup_step
from .journal_queue import journal_queue, serves
from .recovery import owned_by, process_gone

logger = logging.getLogger("celery_durable.steps")

# Seconds to give a worker's pool to replace a process that died (killed, or
# over its hard time limit) before a message goes out for it: a message that
# reaches the worker in the meantime can be handed to no process and lost,
# wedging a worker that takes one message at a time (seen with billiard 4.3).
POOL_GRACE = 3.0

__all__ = [
    "STEP_TASK_NAME",
    "fire_timers",
    "held_steps",
    "on_task_lost",
    "recover_held",
    "register_step_task",
]


def register_step_task(app: Celery) -> None:
    @app.task(name=STEP_TASK_NAME, bind=True, acks_late=True, ignore_result=True, shared=False)
    def run_step(
        task: Task, run_id: str, position: int, attempt: int = 1, journal: Any = None
    ) -> None:
        ext = extension_for(task.app)
        named = JournalId.from_message(journal)
        if named is not None and not serves(ext, named, run_id):
            # Another journal's step (apps sharing a queue): never dropped,
            # sent on to that journal's own queue, as run messages are.
            task.app.send_task(
                STEP_TASK_NAME,
                args=(run_id, position, attempt),
                kwargs={"journal": journal},
                task_id=task.request.id,
                queue=journal_queue(named),
                ignore_result=True,
            )
            return
        Delivery(ext, task, run_id, int(position)).run()


class Delivery:
    """One delivery of a step message, run to its outcome (or to a later retry)."""

    def __init__(self, ext: DurableExtension, task: Task, run_id: str, position: int):
        self.ext = ext
        self.run_id = run_id
        self.position = position
        request = task.request
        self.task_id: str = request.id
        self.hostname: str = request.hostname or ""
        self.queue: str = (request.delivery_info or {}).get("routing_key") or ""
        self.runner = f"{self.hostname}/{os.getpid()}"
        self.where = f"step at position {position} of run {run_id}"
        self.timer = ext.timers.step_member(run_id, position)

    def run(self) -> None:
        records = self.ext.step_records
        start: StepStart = _persist(
            lambda: records.start(
                self.run_id, self.position, self.task_id, self.runner, time.time()
            ),
            self.where,
        )
        if start.verdict != RUN:
            logger.info(
                "%s: message %s dropped (%s%s)",
                self.where,
                self.task_id,
                start.verdict,
                f", run by {start.runner}" if start.runner else "",
            )
            return
        assert start.event is not None
        self.start = start
        data = start.event.data
        self.name = str(data["name"])
        self.queue = self.queue or str(data.get("queue") or "")
        try:
            definition = lookup_step(self.name)
        except ConfigurationError as exc:
            self._fail(exc, start.attempt, time.time(), list(start.failures))
            return
        if definition is None:
            error = StepNotFoundError(
                f"step {self.name!r} ({self.where}) is not defined on worker "
                f"{self.hostname}, which took it from queue {self.queue!r}: import the module "
                f"that defines it in the workers that consume {self.queue!r} (Celery's "
                "`imports`/`include` settings, or the module passed to -A)"
            )
            logger.error("%s", error)
            self._fail(error, start.attempt, time.time(), list(start.failures))
            return
        context = RunContext(
            run_id=self.run_id,
            workflow_name=start.workflow_name,
            attempt=int(data.get("workflow_attempt") or 1),
            started_at=_utc(start.created_at),
            idempotency_key=start.idempotency_key,
        )
        token = current_step_run.set(context)
        try:
            self._attempts(definition.policy, definition.fn, data)
        finally:
            current_step_run.reset(token)

    def _attempts(self, policy: StepPolicy, fn: Any, data: dict[str, Any]) -> None:
        attempt, past = self.start.attempt, list(self.start.failures)
        outage = 0
        while True:
            began = time.time()
            try:
                result = fn(*data.get("args", []), **data.get("kwargs", {}))
                if inspect.iscoroutine(result):
                    result = asyncio.run(result)
            except Exception as exc:
                # The journal's Redis failing is not the step's failure: wait, run it again.
                if journal_failed(self.ext.redis, exc):
                    trouble_log.report(exc, f"{self.where}: waiting for the journal's Redis")
                    time.sleep(backoff(outage))
                    outage += 1
                    continue
                if isinstance(exc, FatalError) or attempt > policy.max_retries:
                    self._fail(exc, attempt, began, past)
                    return
                if not self._retry(policy, exc, attempt, began, past):
                    return  # a later message retries it, or nobody should
                attempt += 1
                continue
            try:
                recorded = roundtrip_bounded(
                    result,
                    self.ext.settings.max_payload_bytes,
                    what=f"the result of step {self.name!r}",
                )
            except EncodingError as exc:
                self._fail(FatalError(str(exc)), attempt, began, past)
                return
            self._finish(
                EventType.STEP_COMPLETED,
                {**self._about(attempt, began), "result": recorded},
                past,
            )
            return

    def _about(self, attempt: int, began: float) -> dict[str, Any]:
        now = time.time()
        return {
            "position": self.position,
            "name": self.name,
            "attempt": attempt,
            "worker": self.hostname,
            "queue": self.queue,
            "task_id": self.task_id,
            "started_at": began,
            "finished_at": now,
            "duration": now - began,
        }

    def _retry(
        self,
        policy: StepPolicy,
        exc: Exception,
        attempt: int,
        began: float,
        past: list[dict[str, Any]],
    ) -> bool:
        """Record a failed attempt; True when this delivery runs the next one."""
        delay = policy.delay_before(attempt, exc)
        retry_at = self.ext.clock.now() + delay
        past.append(
            {
                **self._about(attempt, began),
                "error": self._describe(exc),
                "delay": delay,
                "retry_at": retry_at,
            }
        )
        logger.info(
            "%s: step %s failed (attempt %d), retrying in %.3gs: %r",
            self.where,
            self.name,
            attempt,
            delay,
            exc,
        )
        records = self.ext.step_records

        def record(next_task_id: str = "", extra: Callable[[Any], object] | None = None) -> Any:
            """The attempt in the step's record; `next_task_id`: a task of its own for the retry."""
            return _persist(
                lambda: records.record_retry(
                    self.run_id,
                    self.position,
                    self.start.dispatch_id,
                    self.task_id,
                    past,
                    attempt + 1,
                    next_task_id,
                    extra=extra,
                ),
                self.where,
            )

        if delay <= INLINE_RETRY_DELAY:
            recorded = record()
            if not recorded.recorded or recorded.status in FINAL_STATUSES:
                return False  # the run ended, or the step is another message's now
            time.sleep(delay)
            return True
        # A longer wait is a durable timer: this task ends, holding nothing.
        record(
            dispatched.new_task_id(),
            extra=lambda pipe: pipe.zadd(self.ext.keys.timers(), {self.timer: retry_at}),
        )
        return False

    def _fail(
        self, exc: BaseException, attempt: int, began: float, past: list[dict[str, Any]]
    ) -> None:
        data = {**self._about(attempt, began), "error": self._describe(exc)}
        self._finish(EventType.STEP_FAILED, data, past)

    def _finish(self, kind: EventType, data: dict[str, Any], past: list[dict[str, Any]]) -> None:
        outcome = {"type": str(kind), "data": data, "retries": past}
        recorded = _persist(
            lambda: self.ext.step_records.record_outcome(
                self.run_id,
                self.position,
                self.start.dispatch_id,
                outcome,
                extra=lambda pipe: pipe.zrem(self.ext.keys.timers(), self.timer),
            ),
            self.where,
        )
        if not recorded.recorded:
            logger.info("%s: an outcome was recorded already; this one is dropped", self.where)
        if recorded.wake:
            self.ext.wake(self.run_id)

    def _describe(self, exc: BaseException) -> dict[str, Any]:
        return failures.describe(exc, limit=self.ext.settings.max_text_bytes)


def _persist(write: Any, where: str) -> Any:
    """Call `write` (conditional, so safe to repeat) until Redis takes it."""
    attempt = 0
    while True:
        try:
            return write()
        except Exception as exc:
            if not is_interruption(exc):
                raise
            trouble_log.report(exc, f"{where}: waiting to record in the journal")
            time.sleep(backoff(attempt))
            attempt += 1


def _utc(ts: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


# -- a step's delivery lost: its pool process or its worker died ------------------------


def resend(ext: DurableExtension, run_id: str, state: StepState, why: str) -> bool:
    """Hand the step to a new message if its record still names `state`'s message and runner.

    The compare-and-set makes every path safe to race with the others and
    with a late delivery: one of them wins, the others find the record moved on.
    """
    new_id = dispatched.new_task_id()
    position = state.position
    event = ext.step_records.resend(run_id, position, state.task_id, state.runner, new_id)
    if event is None:
        return False
    message = StepMessage(
        run_id, position, state.attempt, new_id, dispatched.message_options(event.data)
    )
    logger.warning(
        "step %s at position %d of run %s: %s; sent again",
        event.data["name"],
        position,
        run_id,
        why,
    )
    dispatched.send_or_log(ext, [message], f"of run {run_id}")
    return True


def on_task_lost(
    ext: DurableExtension,
    hostname: str,
    task_id: str,
    args: Any,
    exception: BaseException | None,
) -> None:
    """A pool process died under a step (`task_failure` in the worker's main process).

    `WorkerLostError`: the step is sent again, at once. A hard time limit
    (`TimeLimitExceeded`) is a failed attempt of the step, retried by its
    policy like any other failure (from its `step:` timer: nothing waits here).
    """
    if not args or len(args) < 2:
        return
    run_id, position = str(args[0]), int(args[1])
    state = ext.step_records.state(run_id, position)
    if state is None or state.done or state.task_id != task_id:
        return  # finished, or another message has it already
    if state.runner and not owned_by(state.runner, hostname):
        return  # another worker runs it
    if isinstance(exception, TimeLimitExceeded):
        # Reported before the pool kills the process over its limit: a
        # duplicate delivery in another process of this worker cannot be
        # told apart here, and is harmless (the first outcome is kept).
        _time_limit_failure(ext, hostname, run_id, position, task_id, exception)
        return
    if isinstance(exception, WorkerLostError):
        if state.runner and not process_gone(state.runner):
            return  # not the process that died: another delivery runs it
        # By its timer, once the pool has replaced the process (see POOL_GRACE).
        timer = ext.timers.step_member(run_id, position)
        ext.redis.zadd(ext.keys.timers(), {timer: ext.clock.now() + POOL_GRACE})
        new_id = dispatched.new_task_id()
        if ext.step_records.resend(run_id, position, task_id, state.runner, new_id) is not None:
            logger.warning(
                "step at position %d of run %s: its pool process died (%r); sent again in %gs",
                position,
                run_id,
                exception,
                POOL_GRACE,
            )


def _time_limit_failure(
    ext: DurableExtension,
    hostname: str,
    run_id: str,
    position: int,
    task_id: str,
    exception: BaseException,
) -> None:
    """Record a hard time limit as a failed attempt, from the main process."""
    records = ext.step_records
    dispatch_id, attempt, past, name = records.progress(run_id, position)
    if not dispatch_id:
        return
    definition = lookup_step(name)
    policy = definition.policy if definition is not None else StepPolicy(name)
    now = time.time()
    about = {
        "position": position,
        "name": name,
        "attempt": attempt,
        "worker": hostname,
        "task_id": task_id,
        "finished_at": now,
        "error": failures.describe(exception, limit=ext.settings.max_text_bytes),
    }
    timer = ext.timers.step_member(run_id, position)
    # Celery reports the limit before the pool has killed the process over it
    # (SIGTERM, SIGKILL a second or two later): the wake-up and the retry go
    # out by timer, once the pool has replaced it (see POOL_GRACE).
    later = ext.clock.now() + POOL_GRACE
    if attempt > policy.max_retries:
        outcome = {"type": str(EventType.STEP_FAILED), "data": about, "retries": past}
        recorded = records.record_outcome(
            run_id,
            position,
            dispatch_id,
            outcome,
            extra=lambda pipe: pipe.zrem(ext.keys.timers(), timer),
        )
        if recorded.wake:
            ext.timers.schedule(run_id, wake_at=later)
        return
    delay = policy.delay_before(attempt, exception)
    retry_at = max(ext.clock.now() + delay, later)
    past.append({**about, "delay": delay, "retry_at": retry_at})
    records.record_retry(
        run_id,
        position,
        dispatch_id,
        task_id,
        past,
        attempt + 1,
        dispatched.new_task_id(),
        extra=lambda pipe: pipe.zadd(ext.keys.timers(), {timer: retry_at}),
    )


def step_of(record: dict[str, Any]) -> tuple[str, int] | None:
    """For a held step-task message (a worker's record): its run id and position."""
    if record.get("task_name") != STEP_TASK_NAME:
        return None
    from ..rules.task_message import arguments, from_record

    try:
        args, _, _ = arguments(from_record(record))
        return str(args[0]), int(args[1])
    except Exception:
        return None


def recover_held(ext: DurableExtension, held: list[dict[str, Any]], dead: str) -> list[str]:
    """Send again the steps whose messages a dead worker held (running or prefetched).

    Called by the recovery of the dead worker (`monitor.py`) with its record
    of held messages: a step is sent again when its record still names that
    message and no other worker runs it. Returns `run_id#position` of each.
    """
    recovered = []
    for record in held:
        found = step_of(record)
        if found is None:
            continue
        run_id, position = found
        try:
            state = ext.step_records.state(run_id, position)
            if state is None or state.done or state.task_id != record.get("task_id"):
                continue
            if state.runner and not owned_by(state.runner, dead):
                continue  # a duplicate of this message runs elsewhere
            if resend(ext, run_id, state, f"its worker {dead} died"):
                recovered.append(f"{run_id}#{position}")
        except Exception as exc:
            logger.error(
                "could not recover step at position %d of run %s held by %s: %r",
                position,
                run_id,
                dead,
                exc,
            )
    return recovered


def held_steps(records: list[dict[str, Any]]) -> list[str]:
    """`run_id#position` of the step messages among a worker's records of held messages."""
    return sorted(
        f"{r}#{p}" for record in records if (found := step_of(record)) for r, p in [found]
    )


# -- step timers: retries due, and the safety net of lost messages ----------------------


def fire_timers(ext: DurableExtension, claimed: list[ClaimedTimer], now: float) -> None:
    """Handle claimed `step:` timers (from the timer poller), then release them.

    A step with an outcome, or of an ended run: the timer goes. A step no
    delivery runs (a retry due, a message lost or still queued): its
    message is sent again, with the same task id, and the timer moved on
    (by `durable_redispatch_after`, or by how late the step is). A step run
    by a live worker: moved on. By a worker that stopped beating: sent
    again, under a new task id.
    """
    done: list[ClaimedTimer] = []
    recheck_at: dict[str, float] = {}
    workers = _live_workers(ext)
    try:
        for timer in claimed:
            run_id, position = timer.step
            state = ext.step_records.state(run_id, position)
            status = ext.journal.status(run_id)
            done.append(timer)
            if state is None or state.done or status is None or status in FINAL_STATUSES:
                continue  # nothing to send: the timer goes
            again = ext.settings.redispatch_after
            if not state.runner:
                event = ext.step_records.resend(run_id, position, state.task_id, "", "")
                if event is not None:
                    message = StepMessage(
                        run_id,
                        position,
                        state.attempt,
                        state.task_id,
                        dispatched.message_options(event.data),
                    )
                    dispatched.send_or_log(ext, [message], f"of run {run_id}")
                    again = max(again, time.time() - event.ts)
            elif state.runner.rsplit("/", 1)[0] not in workers:
                resend(ext, run_id, state, f"{state.runner} runs it but is not a live worker")
            recheck_at[timer.member] = now + again
    finally:
        ext.timers.release(done, recheck_at)


def _live_workers(ext: DurableExtension) -> set[str]:
    cutoff = time.time() - ext.settings.worker_timeout
    names = ext.redis.zrangebyscore(ext.keys.workers(), cutoff, "+inf")
    return {name.decode() for name in names}
