"""Where due times live and how pollers claim them.

One sorted set holds `wake:<run id>` (a sleep's end or an event's timeout),
`deadline:<run id>` (max_duration) and `dispatch:<run id>` (send a new run
again unless its first dispatch is confirmed) members scored by due time. A
run has at most one of each; scheduling again moves it. A dispatched step has
`step:<run id>:<position>`: its retry when due, and the safety net that sends
its message again should it be lost (see `worker/step_task.py`). Claiming is one Lua call that
leases the due members, so of several workers polling, exactly one gets each;
the poller releases a member once its run is dispatched, and a lease that is
never released fires again.

A message sent is not yet a message run (Redis may lose it in a crash, or
refuse the worker's bookkeeping of it when out of memory), so a fired timer
is not removed but moved on by `durable_redispatch_after` (or by how late the
run already is, whichever is longer): when it fires again, a run that has
moved on (claimed, suspended anew, ended) drops it, and one still waiting for
that message is sent again. A pending run thus always has a timer, and so
does a sleeping one.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.client import Pipeline

from .. import lua
from ..keys import Keys
from ..redis_client import RedisClient

WAKE = "wake"
DEADLINE = "deadline"
DISPATCH = "dispatch"
STEP = "step"


@dataclass(frozen=True)
class ClaimedTimer:
    member: str
    lease: bytes  # the leased score as Redis wrote it, for the release check

    @property
    def kind(self) -> str:
        return self.member.split(":", 1)[0]

    @property
    def run_id(self) -> str:
        return self.member.split(":", 1)[1]

    @property
    def step(self) -> tuple[str, int]:
        """A `step:` timer's run id and position."""
        run_id, position = self.member.split(":", 1)[1].rsplit(":", 1)
        return run_id, int(position)


class TimerStore:
    def __init__(self, client: RedisClient, keys: Keys):
        self.client = client
        self.key = keys.timers()
        self._claim = lua.script(client, "timers/claim")
        self._release = lua.script(client, "timers/release")

    def schedule(
        self,
        run_id: str,
        wake_at: float | None = None,
        deadline_at: float | None = None,
        dispatch_at: float | None = None,
        *,
        pipe: Pipeline | None = None,
    ) -> None:
        members = {}
        if wake_at is not None:
            members[f"{WAKE}:{run_id}"] = wake_at
        if deadline_at is not None:
            members[f"{DEADLINE}:{run_id}"] = deadline_at
        if dispatch_at is not None:
            members[f"{DISPATCH}:{run_id}"] = dispatch_at
        if members:
            (pipe or self.client).zadd(self.key, members)

    @staticmethod
    def dispatch_member(run_id: str) -> str:
        """The member of the timer that sends a new run again (see `Journal.create`)."""
        return f"{DISPATCH}:{run_id}"

    @staticmethod
    def step_member(run_id: str, position: int) -> str:
        """The member of a dispatched step's timer (its retry, or its message's safety net)."""
        return f"{STEP}:{run_id}:{position}"

    def dispatched(self, run_id: str) -> None:
        """Drop the run's dispatch timer (tests that record runs by hand use it)."""
        self.client.zrem(self.key, f"{DISPATCH}:{run_id}")

    @staticmethod
    def members(
        run_id: str, *, wake: bool = True, deadline: bool = True, dispatch: bool = True
    ) -> list[str]:
        """The members of the run's timers of the kinds asked for (what `drop` removes)."""
        kinds = [(WAKE, wake), (DEADLINE, deadline), (DISPATCH, dispatch)]
        return [f"{kind}:{run_id}" for kind, asked in kinds if asked]

    def drop(
        self,
        run_id: str,
        *,
        wake: bool = True,
        deadline: bool = True,
        dispatch: bool = True,
        pipe: Pipeline | None = None,
    ) -> None:
        """Remove the run's timers (those of the kinds asked for)."""
        members = self.members(run_id, wake=wake, deadline=deadline, dispatch=dispatch)
        if members:
            (pipe or self.client).zrem(self.key, *members)

    def claim(
        self, now: float, *, lease: float = 30.0, limit: int = 100
    ) -> tuple[list[ClaimedTimer], float | None]:
        """Lease up to `limit` due timers; also say when the earliest one left is due."""
        flat, earliest = self._claim(keys=[self.key], args=[repr(now), lease, limit])
        claimed = [ClaimedTimer(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]
        return claimed, float(earliest[1]) if earliest else None

    def release(
        self, claimed: list[ClaimedTimer], recheck_at: dict[str, float] | None = None
    ) -> int:
        """Remove claimed timers, or move those in `recheck_at` (member: due time) there.

        A timer set again since its claim (its lease changed) is left alone.
        """
        if not claimed:
            return 0
        recheck_at = recheck_at or {}
        args: list[str | bytes] = []
        for timer in claimed:
            due = recheck_at.get(timer.member)
            args += [timer.member, timer.lease, "" if due is None else repr(due)]
        return int(self._release(keys=[self.key], args=args))

    def next_due(self) -> float | None:
        first = self.client.zrange(self.key, 0, 0, withscores=True)
        return first[0][1] if first else None

    def pending(self) -> int:
        return int(self.client.zcard(self.key))
