"""Where due times live and how pollers claim them.

One sorted set holds `wake:<run id>` (a sleep's end or an event's timeout),
`deadline:<run id>` (max_duration) and `dispatch:<run id>` (send a new run
again unless its first dispatch is confirmed) members scored by due time. A
run has at most one of each; scheduling again moves it. Claiming is one Lua call that
leases the due members, so of several workers polling, exactly one gets each;
the poller releases a member once its run is dispatched, and a lease that is
never released fires again.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import redis
from redis.client import Pipeline

from ..keys import Keys

WAKE = "wake"
DEADLINE = "deadline"
DISPATCH = "dispatch"


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


def _script(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


class TimerStore:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.key = keys.timers()
        self._claim = client.register_script(_script("claim.lua"))
        self._release = client.register_script(_script("release.lua"))

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

    def dispatched(self, run_id: str) -> None:
        """The run's first message is with the broker: no need to send it again."""
        self.client.zrem(self.key, f"{DISPATCH}:{run_id}")

    def drop(self, run_id: str, *, pipe: Pipeline | None = None) -> None:
        (pipe or self.client).zrem(
            self.key, f"{WAKE}:{run_id}", f"{DEADLINE}:{run_id}", f"{DISPATCH}:{run_id}"
        )

    def claim(
        self, now: float, *, lease: float = 30.0, limit: int = 100
    ) -> tuple[list[ClaimedTimer], float | None]:
        """Lease up to `limit` due timers; also say when the earliest one left is due."""
        flat, earliest = self._claim(keys=[self.key], args=[repr(now), lease, limit])
        claimed = [ClaimedTimer(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]
        return claimed, float(earliest[1]) if earliest else None

    def release(self, claimed: list[ClaimedTimer]) -> int:
        if not claimed:
            return 0
        args: list[str | bytes] = []
        for timer in claimed:
            args += [timer.member, timer.lease]
        return int(self._release(keys=[self.key], args=args))

    def next_due(self) -> float | None:
        first = self.client.zrange(self.key, 0, 0, withscores=True)
        return first[0][1] if first else None

    def pending(self) -> int:
        return int(self.client.zcard(self.key))
