"""Redis (broker and journal) full: `maxmemory` with `noeviction` refuses writes.

Every write sequence either completes or leaves what recovery needs: runs
whose writes were refused mid-way wait (holding their claim and their
filing under the worker) and go on once memory is freed; a `start()` that
Redis refused left nothing behind and may simply be called again.
"""

from __future__ import annotations

import time

import pytest
import redis as redis_lib

from celery_durable import start
from celery_durable.errors import RedisOutOfMemoryError
from celery_durable.extension import extension_for
from tests.apps import faulty
from tests.faults import results, statuses, wait_until

pytestmark = pytest.mark.slow

STARTS = 300
STEPS = 10
ROOM = 1_000_000  # bytes of Redis left to the runs: some dozens of them fill it


def _oom_refusals(admin: redis_lib.Redis) -> int:
    return int(admin.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def test_every_run_completes_once_a_full_redis_has_room_again(
    private_redis, private_client, private_workers
):
    ext = extension_for(private_client)
    admin = redis_lib.Redis.from_url(private_redis.url)
    pair = private_workers.start_many(2, concurrency=2)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + ROOM)

    started, refused = [], []
    for number in range(STARTS):
        try:
            started.append(start(faulty.steps, STEPS, 0.01, idempotency_key=f"oom-{number}"))
        except RedisOutOfMemoryError as exc:
            assert "maxmemory" in str(exc)  # says what to do
            refused.append(f"oom-{number}")
    assert refused, "Redis never filled up: lower ROOM"
    # Runs were caught in the middle: claimed, some steps recorded, the next refused.
    wait_until(
        lambda: statuses(ext, started).get("running", 0) >= 2 and _oom_refusals(admin) > 50,
        timeout=30,
        what=lambda: f"runs stuck on a full Redis ({statuses(ext, started)})",
    )
    stuck = statuses(ext, started)
    # start() is all or nothing: a refused one left no journal, index entry or timer.
    assert ext.redis.zcard(ext.keys.runs_index()) == len(started)
    metas = list(ext.redis.scan_iter(match=ext.keys.run_meta("*").replace("{*}", "*")))
    assert len(metas) == len(started)

    admin.config_set("maxmemory", 0)  # memory freed
    freed_at = time.monotonic()
    again = [start(faulty.steps, STEPS, 0.01, idempotency_key=key) for key in refused]
    done = results(started + again, timeout=90)
    took = time.monotonic() - freed_at
    assert all(len(r) == STEPS and max(r) <= 2 for r in done), done
    print(
        f"{len(started)} started, {len(refused)} refused by start(); stuck while full: {stuck}; "
        f"all {len(done)} completed {took:.1f}s after memory was freed"
    )
    for worker in pair:
        assert worker.is_alive()
        worker.wait_for_log("out of memory", timeout=1)  # said once per interval, with advice
        assert worker.log_text().count("maxmemory-policy volatile-ttl") < 20
    admin.close()
