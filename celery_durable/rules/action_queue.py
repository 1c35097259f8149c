"""The Redis-backed queue of accepted action jobs.

A job is one matched evaluation of a rule: its actions run in order, by one
worker's action runner (`worker/rules.py`, main process), outside any task.
Jobs sit in a Redis stream read through a consumer group; a job is
acknowledged and deleted only after its history entry is written, and a job
whose worker died before that is claimed by another worker after
`durable_action_claim_after` seconds. So an accepted action is not lost; it
may run twice if a worker dies mid-job.
"""

from __future__ import annotations

from typing import Any

import redis

from ..codec import packb_lenient, unpackb
from ..keys import Keys
from ..redis_client import RedisClient

GROUP = "durable-actions"
# A safety bound on jobs waiting (approximate trim of the oldest). The rules'
# circuit breakers keep a healthy queue to a handful; only runners stuck for
# long let it reach this, and then the oldest accepted jobs are dropped.
MAXLEN = 10_000


class ActionQueue:
    def __init__(self, client: RedisClient, keys: Keys):
        self.client = client
        self.key = keys.actions()
        self._group_ready = False

    def enqueue(self, job: dict[str, Any]) -> None:
        self.client.xadd(self.key, {"j": packb_lenient(job)}, maxlen=MAXLEN, approximate=True)

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def take(
        self, consumer: str, *, count: int = 10, block_ms: int = 1000
    ) -> list[tuple[str, dict[str, Any]]]:
        self.ensure_group()
        found = self.client.xreadgroup(
            GROUP, consumer, {self.key: ">"}, count=count, block=block_ms
        )
        return [
            (entry_id.decode(), unpackb(fields[b"j"]))
            for _, entries in found or ()
            for entry_id, fields in entries
        ]

    def reclaim(
        self, consumer: str, min_idle_seconds: float, *, count: int = 10
    ) -> list[tuple[str, dict[str, Any]]]:
        """Jobs another worker took and never finished (it died)."""
        self.ensure_group()
        _, claimed, *_ = self.client.xautoclaim(
            self.key,
            GROUP,
            consumer,
            int(min_idle_seconds * 1000),
            start_id="0-0",
            count=count,
        )
        return [
            (entry_id.decode(), unpackb(fields[b"j"])) for entry_id, fields in claimed if fields
        ]

    def done(self, entry_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.key, GROUP, entry_id)
        pipe.xdel(self.key, entry_id)
        pipe.execute()

    def pending(self) -> int:
        return int(self.client.xlen(self.key))

    def forget_consumers(self, *, idle_seconds: float, only: str | None = None) -> int:
        """Delete the group's consumers that hold nothing and were idle that long.

        Their entries would otherwise pile up, one per worker hostname ever
        seen. A consumer with pending jobs is kept: its jobs are reclaimed.
        """
        self.ensure_group()
        forgotten = 0
        for consumer in self.client.xinfo_consumers(self.key, GROUP):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if only is not None and name != only:
                continue
            if consumer["pending"] == 0 and consumer["idle"] >= idle_seconds * 1000:
                self.client.xgroup_delconsumer(self.key, GROUP, name)
                forgotten += 1
        return forgotten
