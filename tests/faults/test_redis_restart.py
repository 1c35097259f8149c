"""redis-server restarts under running workers (broker and journal alike).

The test runs on its own redis-server (`private_redis`: appendonly on, a port and
a directory kept across restarts), stops it with SIGTERM (the AOF is flushed) in the middle of the
runs and starts a new one at the same address. The workers are not
restarted.
"""

from __future__ import annotations

import time

import pytest
import redis as redis_lib

from celery_durable.codec import unpackb
from celery_durable.extension import extension_for
from tests.apps import faulty
from tests.faults import check_steps_once, executions, results, statuses, wait_until

pytestmark = pytest.mark.slow

RUNS = 50
STEPS = 10
DELAY = 0.05
DOWN = 0.5  # seconds without a Redis between the old server and the new one


def test_workers_carry_on_after_redis_restarts(private_redis, private_client, private_workers):
    ext = extension_for(private_client)
    pair = private_workers.start_many(2, concurrency=2)
    runs = [faulty.steps.start(STEPS, DELAY) for _ in range(RUNS)]
    wait_until(
        lambda: statuses(ext, runs).get("completed", 0) >= RUNS // 5,
        timeout=30,
        what=lambda: f"a fifth of the runs done ({statuses(ext, runs)})",
    )
    private_redis.stop()  # SIGTERM: redis-server flushes the AOF and exits
    stopped_at = time.time()
    time.sleep(DOWN)
    private_redis.start()
    back_at = time.time()

    for run, result in zip(runs, results(runs, timeout=90), strict=True):
        assert len(result) == STEPS, (run.id, result)
    assert all(w.is_alive() for w in pair)  # never restarted

    client = redis_lib.Redis.from_url(private_redis.url)
    try:
        for run in runs:
            events = run.events()
            claims = executions(events)
            # A run caught by the restart may have been taken over by a worker
            # that thought the other one dead; its first execution was then
            # fenced out at its next write.
            assert 1 <= len(claims) <= 2, (run.id, claims)
            check_steps_once(
                events,
                faulty.step_counts(client, run.id, STEPS),
                may_repeat_after=claims[-1]["seq"] if len(claims) == 2 else None,
            )
            if len(claims) == 2:
                assert "takeover" in claims[1]["data"], claims
                assert claims[1]["ts"] >= stopped_at
    finally:
        client.close()
    # The restart did happen while runs were under way, and steps that were
    # running then had their results recorded once Redis was back (the stream
    # entry's id is the server's time of the write; an event's `ts` is the
    # writer's time before its first try).
    ends = [run.events()[-1]["ts"] for run in runs]
    assert min(ends) < stopped_at < back_at < max(ends)
    straddling = [
        (run.id, entry_id)
        for run in runs
        for entry_id, fields in ext.redis.xrange(ext.keys.run_events(run.id))
        if (event := unpackb(fields[b"e"]))["type"] == "step.completed"
        and event["data"]["started_at"] < stopped_at
        and int(entry_id.split(b"-")[0]) > back_at * 1000
    ]
    assert straddling, "no step was running when Redis stopped"
