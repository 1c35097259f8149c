"""The record of a run's dispatched steps: who may run each, who does, what came of it.

A step dispatched as its own Celery task (`@step(queue=...)`, `.spawn()`,
`.map()`) is recorded in the run's journal (`step.dispatched`, with its
arguments) and, beside it, in a hash of the run (`Keys.run_steps`, in the
run's hash-tag slot) with fields per position `p`:

- `d:p`  the stream id of its `step.dispatched` (where its arguments are)
- `t:p`  the task id of the one message that may run it now
- `a:p`  its attempt number
- `r:p`  who runs it, `hostname/pid|since` (unset until a delivery starts it)
- `f:p`  its failed attempts so far (msgpack list), while it is retried
- `o:p`  its outcome (msgpack), until the run's journal records it; then ''
- `w:p`  set while the run is suspended waiting for it

and `waiting` (how many `w:` fields are set), `ctx:key` (the run's
idempotency key, for `get_context()` in step bodies).

The run's own writes to it go with its fenced appends (`append.lua`, see
`StepsWrite`); the steps' deliveries write through the scripts here, each
one atomic and conditional, so that whatever the deliveries (duplicates,
redeliveries, re-sends after a worker died) a step's outcome is recorded
once, and the outcome that completes a wait wakes the run, once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.client import Pipeline
from redis.exceptions import NoScriptError

from .. import lua
from ..codec import packb, unpackb
from ..keys import Keys
from ..redis_client import RedisClient
from .events import Event

# Verdicts of `StepRecords.start`.
RUN = "run"
GONE = "gone"
ENDED = "ended"
DONE = "done"
STALE = "stale"
BUSY = "busy"


@dataclass(frozen=True)
class StepStart:
    """What a delivery of a step's message may do (`verdict`), and what it needs to."""

    verdict: str
    event: Event | None = None  # the step.dispatched: name, arguments, queue
    attempt: int = 1
    failures: list[dict[str, Any]] = field(default_factory=list)
    dispatch_id: str = ""
    idempotency_key: str | None = None
    workflow_name: str = ""
    created_at: float = 0.0
    runner: str = ""  # for `busy`: who runs it


@dataclass(frozen=True)
class Recorded:
    recorded: bool
    wake: bool  # this outcome completed the run's wait: wake the run
    status: str  # the run's status ('' when the run is gone)


@dataclass(frozen=True)
class StepState:
    """One position's record as it stands (for timers, recovery and listings)."""

    position: int
    task_id: str
    attempt: int
    runner: str  # `hostname/pid`, '' when no delivery runs it
    since: float | None
    done: bool


def _is_cluster(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


class StepRecords:
    def __init__(self, client: RedisClient, keys: Keys):
        self.client = client
        self.keys = keys
        self._start = lua.script(client, "journal/step_start")
        self._record = lua.script(client, "journal/step_record")
        self._resend = lua.script(client, "journal/step_resend")
        self._scripts_in_pipelines = not _is_cluster(client)

    def _call(
        self,
        script: Any,
        keys: list[str],
        args: list[Any],
        extra: Callable[[Pipeline], object] | None,
    ) -> Any:
        """Run `script`, with `extra` commands (other slots: timers) in the same round trip."""
        if extra is None:
            return script(keys=keys, args=args)
        pipe = self.client.pipeline(transaction=False)
        extra(pipe)
        if not self._scripts_in_pipelines:  # Redis Cluster pipelines take no scripts
            pipe.execute()
            return script(keys=keys, args=args)
        lua.queue_in(pipe, script, keys, args)
        *_, result = pipe.execute(raise_on_error=False)
        if isinstance(result, NoScriptError):  # Redis forgot it: loaded and sent again
            return script(keys=keys, args=args)
        if isinstance(result, Exception):
            raise result
        return result

    def start(
        self,
        run_id: str,
        position: int,
        task_id: str,
        runner: str,
        now: float,
        *,
        extra: Callable[[Pipeline], object] | None = None,
    ) -> StepStart:
        """Ask to run the step's body for the delivery of message `task_id` (see step_start.lua)."""
        keys = [
            self.keys.run_steps(run_id),
            self.keys.run_meta(run_id),
            self.keys.run_events(run_id),
        ]
        reply = self._call(self._start, keys, [position, task_id, runner, repr(now)], extra)
        verdict = reply[0].decode()
        if verdict == BUSY:
            return StepStart(BUSY, runner=reply[1].decode())
        if verdict != RUN:
            return StepStart(verdict)
        event, attempt, failures, dispatch_id, key, name, created = reply[1:8]
        return StepStart(
            RUN,
            event=Event.decode(event, where=f"run {run_id}, step at position {position}"),
            attempt=int(attempt),
            failures=list(unpackb(failures)) if failures else [],
            dispatch_id=dispatch_id.decode(),
            idempotency_key=key.decode() or None,
            workflow_name=name.decode(),
            created_at=float(created or 0.0),
        )

    def record_outcome(
        self,
        run_id: str,
        position: int,
        dispatch_id: str,
        outcome: dict[str, Any],
        *,
        extra: Callable[[Pipeline], object] | None = None,
    ) -> Recorded:
        """Record the step's outcome unless one is there already (see step_record.lua)."""
        args = [position, dispatch_id, "outcome", packb(outcome), "", "", ""]
        return self._recorded(run_id, args, extra)

    def record_retry(
        self,
        run_id: str,
        position: int,
        dispatch_id: str,
        task_id: str,
        failures: list[dict[str, Any]],
        next_attempt: int,
        next_task_id: str = "",
        *,
        extra: Callable[[Pipeline], object] | None = None,
    ) -> Recorded:
        """Record a failed attempt: the next one is `next_attempt`, by message
        `next_task_id` ('' for this same delivery, after a short wait)."""
        args = [
            position,
            dispatch_id,
            "retry",
            packb(failures),
            next_task_id,
            next_attempt,
            task_id,
        ]
        return self._recorded(run_id, args, extra)

    def _recorded(
        self, run_id: str, args: list[Any], extra: Callable[[Pipeline], object] | None
    ) -> Recorded:
        keys = [self.keys.run_steps(run_id), self.keys.run_meta(run_id)]
        recorded, wake, status = self._call(self._record, keys, args, extra)
        return Recorded(bool(recorded), bool(wake), status.decode())

    def resend(
        self, run_id: str, position: int, task_id: str, runner: str, new_task_id: str
    ) -> Event | None:
        """Hand the step to message `new_task_id` if its record still names
        `task_id` and `runner` ('*' any, '' none); the step.dispatched to send, or None."""
        keys = [
            self.keys.run_steps(run_id),
            self.keys.run_meta(run_id),
            self.keys.run_events(run_id),
        ]
        ok, event = self._resend(keys=keys, args=[position, task_id, runner, new_task_id])
        if not ok:
            return None
        return Event.decode(event, where=f"run {run_id}, step at position {position}")

    def outcomes(self, run_id: str, positions: list[int]) -> dict[int, dict[str, Any]]:
        """The outcomes recorded for these positions and not yet in the journal."""
        if not positions:
            return {}
        raw = self.client.hmget(self.keys.run_steps(run_id), [f"o:{p}" for p in positions])
        return {p: unpackb(value) for p, value in zip(positions, raw, strict=True) if value}

    def state(self, run_id: str, position: int) -> StepState | None:
        """One position's record; None when the position has none (or the run is gone)."""
        t, a, r, o = self.client.hmget(
            self.keys.run_steps(run_id), [f"{f}:{position}" for f in ("t", "a", "r", "o")]
        )
        if t is None and o is None:
            return None
        return _state(position, t, a, r, o)

    def progress(self, run_id: str, position: int) -> tuple[str, int, list[dict[str, Any]], str]:
        """(dispatch stream id, attempt, failed attempts, step name) of a position's
        record; ('', 0, [], '') without one."""
        d, a, f = self.client.hmget(
            self.keys.run_steps(run_id), [f"{k}:{position}" for k in ("d", "a", "f")]
        )
        if not d:
            return "", 0, [], ""
        entries = self.client.xrange(self.keys.run_events(run_id), d, d)
        if not entries:
            return "", 0, [], ""
        event = Event.decode(entries[0][1][b"e"], where=f"run {run_id}, stream entry {d!r}")
        return d.decode(), int(a or 1), list(unpackb(f)) if f else [], str(event.data["name"])

    def outstanding(self, run_id: str, *, pipe: Pipeline | None = None) -> Any:
        """Every position's record: `parse_outstanding()` of the reply gives those
        without an outcome. With `pipe`, the read is queued there."""
        return (pipe or self.client).hgetall(self.keys.run_steps(run_id))

    @staticmethod
    def parse_outstanding(reply: dict[bytes, bytes]) -> list[StepState]:
        """The records of `outstanding()` whose step has no outcome yet, by position."""
        fields: dict[int, dict[str, bytes]] = {}
        for name, value in reply.items():
            kind, _, position = name.decode().partition(":")
            if kind in ("t", "a", "r", "o") and position.isdigit():
                fields.setdefault(int(position), {})[kind] = value
        states = []
        for at in sorted(fields):
            f = fields[at]
            if "t" in f and "o" not in f:
                states.append(_state(at, f.get("t"), f.get("a"), f.get("r"), None))
        return states


def _state(
    position: int, t: bytes | None, a: bytes | None, r: bytes | None, o: bytes | None
) -> StepState:
    runner, since = "", None
    if r:
        who, _, when = r.decode().rpartition("|")
        runner, since = who, float(when) if when else None
    return StepState(
        position=position,
        task_id=t.decode() if t else "",
        attempt=int(a) if a else 1,
        runner=runner,
        since=since,
        done=o is not None,
    )
