"""Reading and fenced writing of runs' event logs.

Every write goes through one Lua script (`append.lua`) that checks the position
the writer expects before it appends: two executions of the same run (a
redelivered message, a worker that was presumed dead) can never interleave or
duplicate events. The loser gets `JournalConflictError` and has written
nothing.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

import redis

from ..errors import JournalConflictError
from ..keys import Keys
from .events import FINAL_STATUSES, STATUS_AFTER, Event


def _load_script(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


class Journal:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.keys = keys
        self._append = client.register_script(_load_script("append.lua"))

    # -- writing ---------------------------------------------------------------

    def append(
        self,
        run_id: str,
        expected: int,
        events: list[tuple[str, dict[str, Any]]],
        *,
        meta: dict[str, str | int | float] | None = None,
    ) -> list[Event]:
        """Append `events` (type, data) if the log is at `expected`; return them.

        The run's status follows the last event that changes it; reaching a
        final status is published so that waiting `result()` calls wake up.
        """
        now = time.time()
        built = [
            Event(seq=expected + offset, type=kind, data=data, ts=now)
            for offset, (kind, data) in enumerate(events, start=1)
        ]
        status = ""
        for event in built:
            status = STATUS_AFTER.get(event.type, status)
        channel = self.keys.run_done_channel(run_id) if status in FINAL_STATUSES else ""
        flat_meta: list[Any] = []
        for field, value in (meta or {}).items():
            flat_meta += [field, value]
        ok, position = self._append(
            keys=[self.keys.run_events(run_id), self.keys.run_meta(run_id)],
            args=[
                expected,
                str(status),
                repr(now),
                channel,
                len(flat_meta) // 2,
                *flat_meta,
                *(e.encode() for e in built),
            ],
        )
        if not ok:
            raise JournalConflictError(run_id, expected, int(position))
        return built

    def create(self, run_id: str, workflow_name: str, data: dict[str, Any]) -> Event | None:
        """Record `workflow.started` for a new run; None if the run already exists."""
        try:
            (event,) = self.append(
                run_id,
                0,
                [("workflow.started", data)],
                meta={"name": workflow_name, "created_at": repr(time.time())},
            )
        except JournalConflictError:
            return None
        self.client.zadd(self.keys.runs_index(), {run_id: event.ts})
        return event

    # -- reading ---------------------------------------------------------------

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

    def status(self, run_id: str) -> str | None:
        value = self.client.hget(self.keys.run_meta(run_id), "status")
        return value.decode() if value is not None else None

    def _decode(self, run_id: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
        where = f"run {run_id}, stream entry {entry_id.decode()}"
        return Event.decode(fields.get(b"e", b""), where=where)
