"""Dispatched steps inside one execution of a run: spawn, send in batches, gather.

`StepHandle` (what a spawn returns) and `gather()` live here with the
engine side of both, `FanOut`.

A spawn takes the next position like any step (the order of spawns is part
of the history) but records nothing yet: spawns accumulate until the
workflow needs something (a `gather()`, an inline step, a sleep, a wait, a
child), then go out together: one fenced append of their `step.dispatched`
events (with the arguments) and one publish batch of their messages.

A `gather()` answers from the journal. What it lacks it looks for in the
run's record of dispatched steps (outcomes recorded there by the steps'
deliveries), appends those to the journal (`step.retrying` for each failed
attempt, then `step.completed` or `step.failed`: "consumed"), and if any is
still missing the run suspends (status `waiting`) in the same append that
dispatches what was spawned and marks what it waits for. The delivery whose
outcome completes the wait wakes the run; the next execution replays to the
`gather()` and finds every outcome. When a gather is about to suspend but
all it waits for finished meanwhile, the append is refused
(`StepsChangedError`) and it looks again.

In `async def` workflows a step call first takes its position and lets the
event loop run once: the other calls of an `asyncio.gather()` take theirs.
A call that stayed alone runs as usual (an inline step inline); calls that
came together are dispatched together, and each waits for all of them, so
the run is woken once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import failures
from ..codec import packb
from ..errors import ConfigurationError, JournalCorruptError, StepsChangedError
from ..journal import EventType
from ..journal.journal import StepsWrite
from ..limits import check_size, encode_bounded
from . import dispatched
from .context import current_execution
from .step_policy import StepPolicy

if TYPE_CHECKING:
    from redis.client import Pipeline

    from .execution import Execution

logger = logging.getLogger("celery_durable.execution")

_OUTCOME_TYPES = (EventType.STEP_COMPLETED, EventType.STEP_FAILED)


class StepHandle:
    """A spawned step: pass it to `gather()` (or call `.result()`) for its result.

    Inside a workflow it names the step's position in the run; outside one
    (unit tests of the business logic) the step ran at once and the handle
    holds its result or error.
    """

    def __init__(
        self,
        name: str,
        position: int | None = None,
        owner: object = None,
        *,
        value: Any = None,
        error: BaseException | None = None,
    ):
        self.name = name
        self.position = position
        self.owner = owner  # the execution that spawned it (None outside a workflow)
        self._value = value
        self._error = error

    def __repr__(self) -> str:
        where = f" at position {self.position}" if self.position is not None else ""
        return f"<StepHandle {self.name}{where}>"

    def result(self) -> Any:
        """Wait for this step alone (durably, inside a workflow); its result, or its error."""
        return gather(self)[0]

    def resolved(self) -> Any:
        """Outside a workflow: the result the step had, or its error raised."""
        if self._error is not None:
            raise self._error
        return self._value


def gather(*handles: StepHandle) -> list[Any]:
    """Wait for every spawned step; their results in the order of `handles`.

    Inside a workflow the run suspends (status `waiting`, no worker slot
    held) until all of them have finished, and is woken once. If some
    failed, the error of the first failed one (in the order given) is raised
    once all have finished; every outcome is recorded either way. A replay
    answers from the journal. Outside a workflow the steps ran when spawned.
    """
    for handle in handles:
        if not isinstance(handle, StepHandle):
            raise TypeError(
                f"gather() takes handles of spawned steps (step.spawn(...)), got {handle!r}"
            )
    execution = current_execution.get()
    if execution is None or not handles or all(h.owner is None for h in handles):
        values = []
        first_error: BaseException | None = None
        for handle in handles:
            try:
                values.append(handle.resolved())
            except Exception as exc:
                values.append(None)
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return values
    return execution.fanout.gather(list(handles))


@dataclass
class _Spawn:
    handle: StepHandle
    policy: StepPolicy
    args: list[Any]
    kwargs: dict[str, Any]
    checked: bool


class FanOut:
    """The spawns, sends and gathers of one execution (`Execution.fanout`)."""

    def __init__(self, execution: Execution):
        self.x = execution
        self.unsent: list[_Spawn] = []
        self.async_open: list[StepHandle] = []  # async step calls waiting for their outcome

    def reset(self) -> None:
        """A new attempt of the workflow: it spawns anew."""
        self.unsent.clear()
        self.async_open.clear()

    # -- spawning --------------------------------------------------------------------

    def spawn(
        self,
        policy: StepPolicy,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        check: bool = True,
    ) -> StepHandle:
        """Take the step's position; queue its dispatch unless the journal has it."""
        position, recorded = self.x._position("step", policy.name)
        handle = StepHandle(policy.name, position, self.x)
        if recorded is None:
            spawn = _Spawn(handle, policy, list(args), dict(kwargs), checked=False)
            if check:
                self._check(spawn)
            self.unsent.append(spawn)
        return handle

    def call(self, policy: StepPolicy, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A plain call of a dispatched step: send it, wait for it."""
        return self.gather([self.spawn(policy, args, kwargs)])[0]

    async def call_async(
        self,
        policy: StepPolicy,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """An `async def` step awaited in an `async def` workflow (see the module's doc)."""
        x = self.x
        if x.inside_step():
            result = fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result
        handle = self.spawn(policy, args, kwargs, check=False)
        position = handle.position
        assert position is not None
        if position in x.state.outcomes:
            return self._results([handle])[0]
        # Registered before the event loop runs the other calls of an
        # asyncio.gather(): after it, every one of them is, and each waits
        # for all, so that the run is woken once for the lot.
        self.async_open.append(handle)
        try:
            await asyncio.sleep(0)
            if position in x.state.outcomes:  # a sibling's wait took it in meanwhile
                return self._results([handle])[0]
            alone = x.cursor == position + 1 and len(self.async_open) == 1
            unsent = any(s.handle is handle for s in self.unsent)
            if not policy.dispatched and alone and unsent:
                self.async_open.remove(handle)  # an inline step awaited alone runs inline
                self.unsent = [s for s in self.unsent if s.handle is not handle]
                self.flush()
                return await x._run_step_async_at(position, policy, fn, args, kwargs)
            self._wait([position], [h.position for h in self.async_open if h.position is not None])
        finally:
            if handle in self.async_open:
                self.async_open.remove(handle)
        return self._results([handle])[0]

    def _check(self, spawn: _Spawn) -> None:
        """Refuse arguments that cannot be recorded, naming the step and the argument."""
        limit = self.x.ext.settings.max_payload_bytes
        where = f"step {spawn.policy.name!r} (position {spawn.handle.position})"
        for index, value in enumerate(spawn.args):
            encode_bounded(value, limit, what=f"{where}: argument {index}")
        for key, value in spawn.kwargs.items():
            encode_bounded(value, limit, what=f"{where}: keyword argument {key!r}")
        check_size(packb([spawn.args, spawn.kwargs]), limit, what=f"{where}: the arguments")
        spawn.checked = True

    # -- sending ---------------------------------------------------------------------

    def flush(self) -> None:
        """Record and send what was spawned since the last time: one append, one publish."""
        if not self.unsent:
            return
        spawns, self.unsent = self.unsent, []
        events, write, timers, messages = self._dispatch(spawns, offset=0)
        self.x._append_many(events, steps=write, extra=timers)
        dispatched.send_or_log(self.x.ext, messages, f"for run {self.x.run_id}")

    def _dispatch(
        self, spawns: list[_Spawn], offset: int
    ) -> tuple[
        list[tuple[EventType, dict[str, Any]]],
        StepsWrite,
        Callable[[Pipeline], object],
        list[dispatched.StepMessage],
    ]:
        """The step.dispatched events of `spawns`, their record, timers and messages.

        `offset` is the number of events appended before these in the same write.
        """
        x = self.x
        ext = x.ext
        events: list[tuple[EventType, dict[str, Any]]] = []
        write = StepsWrite(fields={"ctx:key": x.state.started.data.get("idempotency_key") or ""})
        messages = []
        redispatch_at = x.clock.now() + ext.settings.redispatch_after
        due: dict[int, float] = {}
        for spawn in spawns:
            if not spawn.checked:
                self._check(spawn)
            policy, position = spawn.policy, spawn.handle.position
            assert position is not None
            options = {
                "queue": policy.queue or ext.settings.queue,
                "routing_key": policy.routing_key,
                "priority": policy.priority,
                "time_limit": policy.time_limit,
                "soft_time_limit": policy.soft_time_limit,
            }
            options = {k: v for k, v in options.items() if v is not None}
            task_id = dispatched.new_task_id()
            events.append(
                (
                    EventType.STEP_DISPATCHED,
                    {
                        "position": position,
                        "name": policy.name,
                        "queue": options.get("queue") or ext.app.conf.task_default_queue,
                        "args": spawn.args,
                        "kwargs": spawn.kwargs,
                        "task_id": task_id,
                        "workflow_attempt": x.state.attempt,
                        "options": options,
                    },
                )
            )
            write.dispatch.append((offset + len(events), position, task_id))
            messages.append(dispatched.StepMessage(x.run_id, position, 1, task_id, options))
            due[position] = redispatch_at

        def timers(pipe: Pipeline) -> None:
            # Before the append, in its round trip: a timer without its step
            # finds nothing to send; a step without its timer could be lost.
            dispatched.schedule_timers(ext, x.run_id, due, pipe)

        return events, write, timers, messages

    # -- gathering -------------------------------------------------------------------

    def gather(self, handles: list[StepHandle]) -> list[Any]:
        for handle in handles:
            if handle.owner is not self.x:
                raise ConfigurationError(
                    f"gather(): {handle!r} was not spawned by this execution of run "
                    f"{self.x.run_id}; pass handles of steps spawned in the same workflow run"
                )
        positions = [h.position for h in handles if h.position is not None]
        self._wait(positions, positions)
        return self._results(handles)

    def _wait(self, needed: list[int], awaited: list[int]) -> None:
        """Return once the journal has outcomes for `needed`; suspend waiting for
        `awaited` (which holds `needed`) while any of `needed` is missing."""
        x = self.x
        while True:
            x._check_boundary()
            outcomes = x.state.outcomes
            if all(p in outcomes for p in needed):
                return
            unsent = {s.handle.position for s in self.unsent}
            missing = sorted({p for p in (*awaited, *needed) if p not in outcomes})
            sent = [p for p in missing if p not in unsent]
            arrived = self._arrived(sent)
            events = self._consumed(arrived)
            still = [p for p in missing if p not in arrived]
            if not any(p in still for p in needed):
                x._append_many(events, steps=StepsWrite(consume=sorted(arrived)))
                continue
            try:
                self._suspend(events, sorted(arrived), still)
            except StepsChangedError:
                continue  # all it would wait for finished meanwhile: look again

    def _arrived(self, positions: list[int]) -> dict[int, dict[str, Any]]:
        """Outcomes of these positions recorded by the steps' deliveries, not yet consumed."""
        if not positions:
            return {}
        x = self.x
        return x._read(lambda: x.ext.step_records.outcomes(x.run_id, positions))

    def _suspend(
        self,
        consumed: list[tuple[EventType, dict[str, Any]]],
        consume: list[int],
        awaited: list[int],
    ) -> None:
        """Record what arrived, dispatch what was spawned, and suspend waiting for `awaited`."""
        spawns, self.unsent = self.unsent, []
        try:
            events, write, timers, messages = self._dispatch(spawns, offset=len(consumed))
            write.consume.extend(consume)
            write.await_.extend(awaited)
            self.x._suspend(
                "waiting",
                None,
                [*consumed, *events],
                meta={"waiting_for": ""},
                steps=write,
                extra=timers,
                after=lambda: dispatched.send_or_log(
                    self.x.ext, messages, f"for run {self.x.run_id}"
                ),
            )
        except StepsChangedError:
            self.unsent = spawns + self.unsent
            raise

    def _consumed(
        self, arrived: dict[int, dict[str, Any]]
    ) -> list[tuple[EventType, dict[str, Any]]]:
        """The journal events of outcomes found in the run's record of steps."""
        events: list[tuple[EventType, dict[str, Any]]] = []
        for position in sorted(arrived):
            outcome = arrived[position]
            kind = outcome.get("type")
            if kind not in _OUTCOME_TYPES or outcome.get("data", {}).get("position") != position:
                raise JournalCorruptError(
                    f"run {self.x.run_id}: the recorded outcome of the step at position "
                    f"{position} is malformed ({kind!r})"
                )
            for retry in outcome.get("retries") or []:
                events.append((EventType.STEP_RETRYING, retry))
            events.append((EventType(kind), outcome["data"]))
        return events

    def _results(self, handles: list[StepHandle]) -> list[Any]:
        """Results in order; the first failure (in order) raised once all are known."""
        values: list[Any] = []
        first_error: BaseException | None = None
        for handle in handles:
            event = self.x.state.outcomes[handle.position]  # type: ignore[index]
            if event.type == EventType.STEP_COMPLETED:
                values.append(event.data["result"])
            else:
                values.append(None)
                if first_error is None:
                    first_error = failures.rebuild(event.data["error"])
        if first_error is not None:
            raise first_error
        return values
