"""Retention: what keeps the Redis of a busy app from growing without end.

A finished run's own keys (stream, meta, inbox, sends) expire by themselves:
the append of its final event sets their TTL to `durable_retention`
(journal/append.lua). What Redis cannot expire is a member of a shared
sorted set, so the same append files the run in `keys.finished_runs()`
scored by its expiry time, and this sweep, run by every worker's timer
poller now and then, takes the due ones off the runs index. It also trims
the global event stream to `durable_retention` (by entry id, i.e. time).

A round costs one range query on the due end of the finished set (nothing
when nothing is due) and at most `BATCH` runs, whatever the number of runs
kept; several workers sweeping at once only repeat idempotent removals.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .extension import DurableExtension

logger = logging.getLogger("celery_durable.retention")

BATCH = 500
MIN_INTERVAL = 0.5
MAX_INTERVAL = 10.0


class RetentionSweep:
    def __init__(self, ext: DurableExtension):
        self.ext = ext
        self.retention = ext.settings.retention
        # Often enough that an index entry outlives its run by a small part of
        # the retention (a short one in tests), seldom enough to cost nothing.
        retention = self.retention or MAX_INTERVAL
        self.interval = min(MAX_INTERVAL, max(MIN_INTERVAL, retention / 4))
        self._next = 0.0

    def maybe_sweep(self) -> int:
        """Sweep if a round is due (or the last one was full); runs taken off the index."""
        now = time.monotonic()
        if self.retention is None or now < self._next:
            return 0
        swept = self.sweep()
        self._next = now if swept >= BATCH else now + self.interval
        return swept

    def sweep(self, now: float | None = None) -> int:
        """One bounded round over at most BATCH due runs; how many it looked at."""
        keys, client = self.ext.keys, self.ext.redis
        now = time.time() if now is None else now
        due = client.zrangebyscore(keys.finished_runs(), "-inf", now, start=0, num=BATCH)
        pipe = client.pipeline(transaction=False)
        if self.retention is not None:
            first_kept = int((now - self.retention) * 1000)
            pipe.xtrim(keys.events(), minid=f"{max(0, first_kept)}-0", approximate=True)
        if not due:
            pipe.execute()
            return 0
        run_ids = [member.decode() for member in due]
        for run_id in run_ids:
            pipe.pttl(keys.run_meta(run_id))
        ttls = pipe.execute()[-len(run_ids) :]
        gone = [run_id for run_id, ttl in zip(run_ids, ttls, strict=True) if ttl == -2]
        kept = [run_id for run_id, ttl in zip(run_ids, ttls, strict=True) if ttl == -1]
        later = {
            run_id: now + ttl / 1000 for run_id, ttl in zip(run_ids, ttls, strict=True) if ttl > 0
        }
        pipe = client.pipeline(transaction=False)
        if gone:
            pipe.zrem(keys.runs_index(), *gone)
        if gone or kept:
            # Kept: no TTL, so it did not end after all (its final append was
            # refused) or it was written under `durable_retention = None`.
            pipe.zrem(keys.finished_runs(), *gone, *kept)
        if later:  # not expired yet (a clock ahead of Redis's): look again then
            pipe.zadd(keys.finished_runs(), later, xx=True)
        pipe.execute()
        return len(run_ids)
