"""Reading and fenced writing of runs' event logs.

Every write goes through one Lua script (`append.lua`) that checks the position
the writer expects before it appends: two executions of the same run (a
redelivered message, a worker that was presumed dead) can never interleave or
duplicate events. The loser gets `JournalConflictError` and has written
nothing.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.client import Pipeline
from redis.exceptions import NoScriptError

from .. import lua
from ..codec import packb, unpackb
from ..errors import (
    InboxChangedError,
    JournalConflictError,
    RunEventLimitError,
    StepsChangedError,
)
from ..keys import Keys
from ..redis_client import RedisClient
from .events import FINAL_STATUSES, Event, status_after


@dataclass(frozen=True)
class Notification:
    """An entry for another run's inbox, written with an append."""

    run_id: str
    name: str
    payload: bytes


@dataclass(frozen=True)
class StepsWrite:
    """What an append does to the run's record of dispatched steps (KEYS[7] of append.lua).

    `dispatch`: (index of the event among those appended, position, task id)
    for each step.dispatched appended; `await_`: positions the run suspends
    waiting for (the append is refused with `StepsChangedError` when all of
    them have finished); `consume`: positions whose outcomes the appended
    events record; `fields`: fields of the record to set (the run's context).
    """

    dispatch: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)
    await_: list[int] = dataclasses.field(default_factory=list)
    consume: list[int] = dataclasses.field(default_factory=list)
    fields: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Ended:
    """The tidying after a run's final event, sent in its append's round trip (ended.lua).

    `timers`: members of the run's timers to remove; `worker_runs`: the key
    of the set of runs of the worker whose execution ended it (None for
    none); `activity`: the encoded activity for the global stream.
    """

    timers: list[str]
    worker_runs: str | None
    activity: bytes | None
    activity_maxlen: int | None


@dataclass(frozen=True)
class Appended:
    events: list[Event]
    cancel_requested: bool  # someone asked the run to stop at its next boundary
    parent_waiting: bool = False  # the notified run waits for this notification
    # The append happened but a command of `extra` failed (Redis out of
    # memory, say): the caller writes it again before relying on it.
    extra_error: Exception | None = None
    # With `ended`: the run's dispatched steps' record (field -> value) as
    # the tidying found it, or None when it was not done (Redis Cluster, or
    # it failed): the caller tidies up itself.
    ended_steps: dict[bytes, bytes] | None = None


@dataclass(frozen=True)
class Page:
    """A bounded slice of a run's history, with what a summary needs besides."""

    meta: dict[str, str]
    first: Event | None  # workflow.started: the arguments
    last: Event | None  # the outcome of a finished run
    events: list[Event]
    total: int
    next_cursor: str | None  # the stream id to continue after; None at the end


@dataclass(frozen=True)
class InboxEntry:
    id: str
    name: str
    payload: Any


def _is_cluster(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


class Journal:
    """A run's history in Redis.

    `retention` (seconds, None for ever) is how long a finished run's keys
    live after its final event: they expire in the same atomic write, and
    the run goes into the set of finished runs, from which the retention
    sweep takes it off the runs index. `max_events` (None for no limit)
    refuses an append that would take a run past that many events with
    `RunEventLimitError`; the final event of a run is always accepted.
    """

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        *,
        retention: float | None = None,
        max_events: int | None = None,
    ):
        self.client = client
        self.keys = keys
        self.retention = retention
        self.max_events = max_events
        self._append = lua.script(client, "journal/append")
        # redis-py's cluster pipelines refuse EVALSHA.
        self._scripts_in_pipelines = not _is_cluster(client)
        self._send = lua.script(client, "journal/send")
        self._start = lua.script(client, "journal/start")
        self._ended = lua.script(client, "journal/ended")
        self._last_keys: tuple[str, tuple[str, ...]] | None = None

    # -- writing ---------------------------------------------------------------

    def append(
        self,
        run_id: str,
        expected: int,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        meta: Mapping[str, str | int | float] | None = None,
        inbox_len: int | None = None,
        notify: Notification | None = None,
        extra: Callable[[Pipeline], object] | None = None,
        steps: StepsWrite | None = None,
        ended: Ended | None = None,
    ) -> Appended:
        """Append `events` (type, data) if the log is at `expected`.

        The run's status follows the last event that changes it; reaching a
        final status is published so that waiting `result()` calls wake up.
        `inbox_len` makes the append conditional on the run's inbox having
        that many entries (a waiting run must not miss an event sent while it
        decided to wait); `notify` adds an entry to another run's inbox (a
        parent's) in the same atomic write. `extra` queues more commands to
        send in the same round trip, *before* the append and not atomically:
        they run whatever the append's outcome, so they must be harmless
        without it (file a run under its worker, set a timer). When one of
        them fails and the append happened, `Appended.extra_error` says so.
        `steps` changes the run's record of dispatched steps in the same
        atomic write (see `StepsWrite`). `ended`, for events that end the
        run, tidies up after it in the same round trip, once the append is
        done (see `Ended`, `Appended.ended_steps`).
        """
        built, keys, args, final = self._prepare(
            run_id, expected, events, meta, inbox_len, notify, steps
        )
        if final and self.retention is not None:
            extra = self._track_finished(run_id, extra)
        tidy = self._ended_call(run_id, built, ended) if final and ended is not None else None
        extra_error = None
        ended_reply: Any = None
        if extra is None and tidy is None:
            result = self._append(keys=keys, args=args)
        else:
            pipe = self.client.pipeline(transaction=False)
            if extra is not None:
                extra(pipe)
            if self._scripts_in_pipelines:
                lua.queue_in(pipe, self._append, keys, args)
                if tidy is not None:
                    lua.queue_in(pipe, self._ended, *tidy)
                    *answers, result, ended_reply = pipe.execute(raise_on_error=False)
                else:
                    *answers, result = pipe.execute(raise_on_error=False)
                if isinstance(ended_reply, NoScriptError):  # the caller tidies up this time
                    self.client.script_load(self._ended.script)
                if isinstance(result, NoScriptError):  # a Redis restarted or flushed
                    result = self._append(keys=keys, args=args)  # loads it, sends again
                    ended_reply = None  # the tidying found the run not ended: not done
                elif isinstance(result, Exception):
                    raise result
            else:  # Redis Cluster pipelines take no scripts: a round trip of its own
                answers = pipe.execute(raise_on_error=False)
                result = self._append(keys=keys, args=args)
            extra_error = next((a for a in answers if isinstance(a, Exception)), None)
        appended = self._outcome(run_id, expected, built, result, notify)
        changes: dict[str, Any] = {}
        if extra_error is not None:
            changes["extra_error"] = extra_error
        if isinstance(ended_reply, list):
            pairs = iter(ended_reply)
            changes["ended_steps"] = dict(zip(pairs, pairs, strict=True))
        return dataclasses.replace(appended, **changes) if changes else appended

    def _ended_call(
        self, run_id: str, built: list[Event], ended: Ended
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of ended.lua for these final events."""
        meta = self.keys.run_meta(run_id)
        keys = [
            meta,
            self.keys.timers(),
            self.keys.run_sent(run_id),
            ended.worker_runs or meta,
            self.keys.events(),
            self.keys.run_steps(run_id),
        ]
        maxlen = "" if ended.activity_maxlen is None else str(ended.activity_maxlen)
        args = [
            str(built[-1].seq),
            run_id if ended.worker_runs else "",
            ended.activity or b"",
            maxlen,
            *ended.timers,
        ]
        return keys, args

    def _track_finished(
        self, run_id: str, extra: Callable[[Pipeline], object] | None
    ) -> Callable[[Pipeline], object]:
        """`extra`, plus filing the run among the finished ones by expiry time.

        Sent in the append's round trip (the keys are in other cluster slots,
        so not in its script); should the append itself be refused, the
        sweep finds the run still there and lets it be.
        """
        expires_at = time.time() + (self.retention or 0.0)

        def track(pipe: Pipeline) -> None:
            pipe.zadd(self.keys.finished_runs(), {run_id: expires_at})
            if extra is not None:
                extra(pipe)

        return track

    def create(
        self,
        run_id: str,
        workflow_name: str,
        data: dict[str, Any],
        *,
        meta: dict[str, str] | None = None,
        timer: tuple[str, float] | None = None,
    ) -> Event | None:
        """Record `workflow.started` for a new run; None if the run already exists.

        The run's event, meta, index entry and `timer` (member, due time: the
        one that dispatches it should its message be lost) are written by one
        script, all or nothing. On Redis Cluster, where they live in several
        slots, the index entry and the timer are written first: either is
        harmless without the run, a run without them is not.
        """
        now = time.time()
        meta = {"name": workflow_name, "created_at": repr(now), **(meta or {})}
        started = Event.build(1, "workflow.started", data, now)  # arguments may be Packed
        member, due = timer if timer is not None else ("", 0.0)
        if self._scripts_in_pipelines:
            fields = {**meta, "seq": "1", "updated_at": repr(now), "status": status_after(started)}
            keys = [
                self.keys.run_events(run_id),
                self.keys.run_meta(run_id),
                self.keys.runs_index(),
                self.keys.timers(),
            ]
            args: list[bytes | str] = [
                packb(fields),
                run_id,
                repr(now),
                member,
                repr(due),
                started.encode(),
            ]
            code, _ = self._start(keys=keys, args=args)
            if code in (1, 2):
                return started  # written now, or our own write sent again after a lost reply
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.runs_index(), {run_id: now}, nx=True)
        if timer is not None:
            pipe.zadd(self.keys.timers(), {member: due})
        pipe.execute()
        try:
            appended = self.append(run_id, 0, [("workflow.started", data)], meta=meta)
        except JournalConflictError:
            return None
        return appended.events[0]

    def _prepare(
        self,
        run_id: str,
        expected: int,
        events: Sequence[tuple[str, dict[str, Any]]],
        meta: Mapping[str, str | int | float] | None,
        inbox_len: int | None,
        notify: Notification | None,
        steps: StepsWrite | None = None,
        *,
        file: bool = False,
    ) -> tuple[list[Event], list[str], list[Any], bool]:
        """The events with their positions, the script's keys and arguments, and
        whether the events end the run."""
        now = time.time()
        built = [
            Event.build(expected + offset, kind, data, now)
            for offset, (kind, data) in enumerate(events, start=1)
        ]
        status = ""
        for event in built:
            status = status_after(event, status)
        options: dict[str, Any] = {"now": repr(now)}
        final = status in FINAL_STATUSES
        if status:
            options["status"] = status
            if final:
                options["channel"] = self.keys.run_done_channel(run_id)
        if final and self.retention is not None:
            options["expire_ms"] = max(1, int(self.retention * 1000))
        if self.max_events is not None:
            if not final:
                options["max_events"] = self.max_events
            elif len(built) > 1:  # the final event is always taken, not those before it
                options["max_events"] = self.max_events + 1
        if meta:
            options["meta"] = {k: str(v) for k, v in meta.items()}
        if inbox_len is not None:
            options["inbox_len"] = inbox_len
        if file:  # KEYS[8], the worker's set of runs, is the caller's to add
            options["file"] = run_id
        if steps is not None:
            if steps.dispatch:
                options["dispatch"] = [list(d) for d in steps.dispatch]
            if steps.await_:
                options["await"] = steps.await_
            if steps.consume:
                options["consume"] = steps.consume
            if steps.fields:
                options["steps_set"] = steps.fields
        keys = list(self._keys_of(run_id))
        notify_payload = b""
        if notify is not None:
            keys[3] = self.keys.run_inbox(notify.run_id)
            keys[4] = self.keys.run_meta(notify.run_id)
            options["notify_name"] = notify.name
            notify_payload = notify.payload
        args = [expected, packb(options), notify_payload, *(e.encode() for e in built)]
        return built, keys, args, final

    def _keys_of(self, run_id: str) -> tuple[str, ...]:
        """The keys of append.lua for `run_id` (with no one to notify), made once per run.

        An execution appends to one run over and over: the last run's keys are kept.
        """
        last = self._last_keys
        if last is not None and last[0] == run_id:
            return last[1]
        meta, inbox = self.keys.run_meta(run_id), self.keys.run_inbox(run_id)
        keys = (
            self.keys.run_events(run_id),
            meta,
            inbox,
            inbox,
            meta,
            self.keys.run_sent(run_id),
            self.keys.run_steps(run_id),
        )
        self._last_keys = (run_id, keys)
        return keys

    def _outcome(
        self,
        run_id: str,
        expected: int,
        built: list[Event],
        result: list[int],
        notify: Notification | None = None,
    ) -> Appended:
        code, position, cancel, notified_waits = result
        if code == 0:
            if int(position) == expected + len(built) and self._landed(run_id, built):
                # The connection dropped after Redis applied our write and the
                # client sent it again: the "conflict" is our own write.
                return self._landed_outcome(run_id, built, notify)
            raise JournalConflictError(run_id, expected, int(position))
        if code == 2:
            raise InboxChangedError(run_id)
        if code == 3:
            raise RunEventLimitError(run_id, self.max_events or 0, int(position))
        if code == 4:
            raise StepsChangedError(run_id)
        return Appended(built, bool(cancel), bool(notified_waits))

    def _landed(self, run_id: str, built: list[Event]) -> bool:
        """Are the last entries of the run's stream exactly these events?"""
        entries = self.client.xrevrange(self.keys.run_events(run_id), count=len(built))
        stored = [fields.get(b"e") for _, fields in reversed(entries)]
        return stored == [event.encode() for event in built]

    def _landed_outcome(
        self, run_id: str, built: list[Event], notify: Notification | None
    ) -> Appended:
        cancel = self.client.hget(self.keys.run_meta(run_id), "cancel_requested")
        parent_waiting = False
        if notify is not None:
            status, waiting_for = self.client.hmget(
                self.keys.run_meta(notify.run_id), "status", "waiting_for"
            )
            parent_waiting = status == b"waiting" and waiting_for == notify.name.encode()
        return Appended(built, cancel is not None, parent_waiting)

    def send(
        self, run_id: str, name: str, payload: bytes, *, send_id: str | None = None
    ) -> tuple[str, str, bool]:
        """Add an event to a run's inbox: (status, the event name it waits for, fresh).

        Status is '' for an unknown run, and nothing is written for a finished one.
        A `send_id` already used for this run writes nothing again (`fresh` is
        False): a signed webhook URL posted twice delivers once.
        """
        send_id = send_id or uuid.uuid4().hex  # the same when redis-py sends the call again
        status, waiting_for, fresh = self._send(
            keys=[
                self.keys.run_meta(run_id),
                self.keys.run_inbox(run_id),
                self.keys.run_sent(run_id),
            ],
            args=[name, payload, send_id],
        )
        return status.decode(), waiting_for.decode(), bool(fresh)

    def inbox(self, run_id: str) -> list[InboxEntry]:
        entries = self.client.xrange(self.keys.run_inbox(run_id))
        return [
            InboxEntry(entry_id.decode(), fields[b"n"].decode(), unpackb(fields[b"p"]))
            for entry_id, fields in entries
        ]

    # -- reading ---------------------------------------------------------------

    def load(self, run_id: str) -> tuple[dict[str, str], list[Event]]:
        """The run's meta hash and whole history, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.run_meta(run_id))
        pipe.xrange(self.keys.run_events(run_id))
        raw_meta, entries = pipe.execute()
        meta = {k.decode(): v.decode() for k, v in raw_meta.items()}
        return meta, [self._decode(run_id, entry_id, fields) for entry_id, fields in entries]

    def load_claiming(
        self,
        run_id: str,
        claim: tuple[str, dict[str, Any]],
        *,
        meta: dict[str, str | int | float],
        worker_runs: str,
    ) -> tuple[dict[str, str], list[Event], bool]:
        """`load`, claiming the run in the same round trip should it be fresh.

        A run whose log holds only `workflow.started` (position 1) is pending
        and nobody's yet: `claim` (an event) is appended there as `append`
        would, with `meta`, and the run filed in the set `worker_runs` in the
        same atomic write, before the run is read: the execution that sends
        the claim reads it back. Any other run is only read (the fence
        refuses the claim, writing nothing). Returns the meta, the history,
        and whether the claim was appended. On Redis Cluster (the worker's
        set is in another slot), no claim is sent.
        """
        if not self._scripts_in_pipelines:
            meta_now, events = self.load(run_id)
            return meta_now, events, False
        built, keys, args, _ = self._prepare(run_id, 1, [claim], meta, None, None, file=True)
        pipe = self.client.pipeline(transaction=False)
        lua.queue_in(pipe, self._append, [*keys, worker_runs], args)
        pipe.hgetall(self.keys.run_meta(run_id))
        pipe.xrange(self.keys.run_events(run_id))
        result, raw_meta, entries = pipe.execute(raise_on_error=False)
        for answer in (raw_meta, entries):
            if isinstance(answer, Exception):
                raise answer
        claimed = False
        if not isinstance(result, Exception):  # NOSCRIPT, out of memory: not claimed
            try:
                self._outcome(run_id, 1, built, result)
                claimed = True
            except JournalConflictError:
                pass
        meta_now = {k.decode(): v.decode() for k, v in raw_meta.items()}
        events = [self._decode(run_id, entry_id, fields) for entry_id, fields in entries]
        return meta_now, events, claimed

    def page(self, run_id: str, *, after: str | None = None, count: int = 100) -> Page:
        """Up to `count` events after stream id `after` (from the first when None).

        One round trip of bounded reads (XRANGE ... COUNT), whatever the
        length of the history: what `runs show` pages a long history with.
        """
        stream = self.keys.run_events(run_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.run_meta(run_id))
        pipe.xrange(stream, count=1)
        pipe.xrevrange(stream, count=1)
        pipe.xrange(stream, min=f"({after}" if after else "-", count=count + 1)
        pipe.xlen(stream)
        raw_meta, first, last, entries, total = pipe.execute()
        more = len(entries) > count
        entries = entries[:count]
        return Page(
            meta={k.decode(): v.decode() for k, v in raw_meta.items()},
            first=self._decode(run_id, *first[0]) if first else None,
            last=self._decode(run_id, *last[0]) if last else None,
            events=[self._decode(run_id, entry_id, fields) for entry_id, fields in entries],
            total=int(total),
            next_cursor=entries[-1][0].decode() if more else None,
        )

    def read(self, run_id: str) -> list[Event]:
        """The run's whole history, oldest first (empty for an unknown run)."""
        entries = self.client.xrange(self.keys.run_events(run_id))
        return [self._decode(run_id, entry_id, fields) for entry_id, fields in entries]

    def last(self, run_id: str) -> Event | None:
        entries = self.client.xrevrange(self.keys.run_events(run_id), count=1)
        if not entries:
            return None
        entry_id, fields = entries[0]
        return self._decode(run_id, entry_id, fields)

    def meta(self, run_id: str) -> dict[str, str]:
        """The run's meta hash with text keys and values ({} for an unknown run)."""
        raw = self.client.hgetall(self.keys.run_meta(run_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def status_and_last(self, run_id: str) -> tuple[str | None, Event | None]:
        """The run's status (None for an unknown run) and last event, in one round trip.

        The last event is decoded only for a finished run (its outcome): None
        for others, whatever their last entry holds.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.keys.run_meta(run_id), "status")
        pipe.xrevrange(self.keys.run_events(run_id), count=1)
        raw_status, entries = pipe.execute()
        status = raw_status.decode() if raw_status is not None else None
        if status not in FINAL_STATUSES or not entries:
            return status, None
        return status, self._decode(run_id, *entries[0])

    def status(self, run_id: str) -> str | None:
        value = self.client.hget(self.keys.run_meta(run_id), "status")
        return value.decode() if value is not None else None

    def _decode(self, run_id: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
        where = f"run {run_id}, stream entry {entry_id.decode()}"
        return Event.decode(fields.get(b"e", b""), where=where)
