"""Reading and writing schedules in Redis.

Each schedule has a hash (definition and state) and a history list that
share a Cluster slot, its name in the sorted set of names, and, while it is
active, a `schedule:<name>` member of the timers' sorted set scored by its
next tick (seconds). No command touches two of those slots at once: writes
go name first, then hash, then timer, so a call that dies half-way leaves at
worst a listed name without a hash (skipped by listings) or a schedule
without its timer (restored by the next `schedule()` of it or the next
worker start, see `ensure_timers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import lua
from ..codec import packb, unpackb
from ..redis_client import RedisClient
from .model import ScheduleSpec, ScheduleState

if TYPE_CHECKING:
    from ..extension import DurableExtension
    from ..keys import Keys
    from ..timers.store import ClaimedTimer

SCHEDULE = "schedule"  # the timer member kind: `schedule:<name>`


def member(name: str) -> str:
    return f"{SCHEDULE}:{name}"


def schedule_store(ext: DurableExtension) -> ScheduleStore:
    """The schedules of `ext`'s app: one store per app and process."""
    return ext.component(_make_store)


def _make_store(ext: DurableExtension) -> ScheduleStore:
    return ScheduleStore(ext.redis, ext.keys, ext.settings.schedule_history_maxlen)


@dataclass(frozen=True)
class Saved:
    outcome: str  # created | updated | unchanged | taken
    next_tick: int | None
    paused: bool


@dataclass(frozen=True)
class Advance:
    """What one firing of a schedule writes (see advance.lua)."""

    name: str
    expected: str  # the next tick as read
    next_tick: int | None
    set_fields: dict[str, str]
    counters: dict[str, int]
    entries: list[dict[str, Any]]


class ScheduleStore:
    def __init__(self, client: RedisClient, keys: Keys, history_maxlen: int):
        self.client = client
        self.keys = keys
        self.history_maxlen = history_maxlen
        # redis-py's cluster pipelines refuse EVALSHA: there, scripts go one by one.
        self._pipelined = not _is_cluster(client)
        self._save = lua.script(client, "schedules/save")
        self._advance = lua.script(client, "schedules/advance")
        self._move = lua.script(client, "schedules/move")

    # -- definitions ------------------------------------------------------------

    def save(self, spec: ScheduleSpec, next_tick: int | None, now: float) -> Saved:
        """Store `spec` (see save.lua), then make its timer match what is stored."""
        self.client.zadd(self.keys.schedules(), {spec.name: 0})
        args: list[Any] = [spec.source, spec.digest(), _tick_text(next_tick), repr(now)]
        for key, value in spec.fields().items():
            args += [key, value]
        outcome, stored_next, paused = self._save(keys=[self.keys.schedule(spec.name)], args=args)
        saved = Saved(outcome.decode(), _tick(stored_next), paused == b"1")
        if saved.outcome == "taken":
            return saved
        timer = member(spec.name)
        if saved.paused or saved.next_tick is None:
            self.client.zrem(self.keys.timers(), timer)
        elif saved.outcome == "unchanged":  # only restore a lost timer; a leased one stays
            self.client.zadd(self.keys.timers(), {timer: saved.next_tick / 1000}, nx=True)
        else:
            self.client.zadd(self.keys.timers(), {timer: saved.next_tick / 1000})
        return saved

    def load(self, name: str) -> tuple[ScheduleSpec, ScheduleState] | None:
        stored = self.client.hgetall(self.keys.schedule(name))
        return _decode(name, stored)

    def load_many(self, names: list[str]) -> list[tuple[ScheduleSpec, ScheduleState] | None]:
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.schedule(name))
        return [_decode(name, stored) for name, stored in zip(names, pipe.execute(), strict=True)]

    def names(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        """Names in lexical order, from just after `after`."""
        low = "-" if after is None else f"({after}"
        found = self.client.zrangebylex(self.keys.schedules(), low, "+", start=0, num=limit)
        return [name.decode() for name in found]

    def exists(self, name: str) -> bool:
        return bool(self.client.exists(self.keys.schedule(name)))

    def delete(self, name: str) -> bool:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.keys.schedules(), name)
        pipe.zrem(self.keys.timers(), member(name))
        pipe.delete(self.keys.schedule(name))  # one key per DEL: cluster pipelines want that
        pipe.delete(self.keys.schedule_history(name))
        removed_name, _, removed_hash, _ = pipe.execute()
        return bool(removed_name or removed_hash)

    # -- state ----------------------------------------------------------------------

    def pause(self, name: str) -> None:
        self.client.hset(self.keys.schedule(name), "paused", "1")
        self.client.zrem(self.keys.timers(), member(name))

    def resume(self, name: str, next_tick: int | None) -> None:
        self.client.hset(
            self.keys.schedule(name), mapping={"paused": "0", "next_tick": _tick_text(next_tick)}
        )
        if next_tick is not None:
            self.client.zadd(self.keys.timers(), {member(name): next_tick / 1000})

    def record(self, name: str, entry: dict[str, Any], fields: dict[str, str]) -> None:
        """A history entry outside firing (a manual trigger)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.keys.schedule(name), mapping=fields)
        pipe.hincrby(self.keys.schedule(name), "runs", 1)
        pipe.lpush(self.keys.schedule_history(name), packb(entry))
        pipe.ltrim(self.keys.schedule_history(name), 0, self.history_maxlen - 1)
        pipe.execute()

    def history(self, name: str, limit: int) -> list[dict[str, Any]]:
        """The latest entries, newest first."""
        raw = self.client.lrange(self.keys.schedule_history(name), 0, max(0, limit - 1))
        return [unpackb(item) for item in raw]

    # -- firing ------------------------------------------------------------------

    def advance_many(self, advances: list[Advance]) -> list[bool]:
        """Apply each firing's outcome (one round trip); whether each one applied."""
        pipe = self.client.pipeline(transaction=False) if self._pipelined else None
        results = []
        for a in advances:
            args: list[Any] = [a.expected, _tick_text(a.next_tick), self.history_maxlen]
            args.append(len(a.set_fields))
            for key, value in a.set_fields.items():
                args += [key, value]
            args.append(len(a.counters))
            for key, delta in a.counters.items():
                args += [key, delta]
            args += [packb(entry) for entry in a.entries]
            keys = [self.keys.schedule(a.name), self.keys.schedule_history(a.name)]
            results.append(self._advance(keys=keys, args=args, client=pipe or self.client))
        if pipe is not None:
            results = pipe.execute()
        return [bool(result) for result in results]

    def move_timers(self, moves: list[tuple[ClaimedTimer, int | None]]) -> None:
        """Move each claimed timer to its tick (None: remove it), unless set since."""
        if not moves:
            return
        pipe = self.client.pipeline(transaction=False) if self._pipelined else None
        for timer, tick in moves:
            score = "" if tick is None else repr(tick / 1000)
            self._move(
                keys=[self.keys.timers()],
                args=[timer.member, timer.lease, score],
                client=pipe or self.client,
            )
        if pipe is not None:
            pipe.execute()

    def ensure_timers(self, batch: int = 500) -> int:
        """Give every active schedule its timer if it lost it; how many were restored.

        A `schedule()` call that died between its writes is the only way to
        lose one; a worker calls this when it starts. ZADD NX leaves timers
        that exist (leased ones included) alone.
        """
        restored, after = 0, None
        while True:
            names = self.names(after=after, limit=batch)
            if not names:
                return restored
            pipe = self.client.pipeline(transaction=False)
            for name, loaded in zip(names, self.load_many(names), strict=True):
                if loaded is None:
                    continue
                _, state = loaded
                if not state.paused and state.next_tick is not None:
                    pipe.zadd(self.keys.timers(), {member(name): state.next_tick / 1000}, nx=True)
            restored += sum(int(n) for n in pipe.execute())
            after = names[-1]


def _is_cluster(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def _decode(name: str, stored: dict[bytes, bytes]) -> tuple[ScheduleSpec, ScheduleState] | None:
    if not stored or b"workflow" not in stored:
        return None
    return ScheduleSpec.from_hash(name, stored), ScheduleState.from_hash(stored)


def _tick_text(tick: int | None) -> str:
    return "" if tick is None else str(tick)


def _tick(raw: bytes | None) -> int | None:
    return int(raw) if raw else None
