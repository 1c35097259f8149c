"""Redis (broker and journal) away for a minute under running workers.

redis-py's retries give up after about half a minute; an execution must
outlast that: the runs in flight stop and go on when Redis is back, none
ends failed, and every thread of the workers (timer poller, monitor,
action runner, event writer) and the workers themselves keep serving.
The server is stopped with SIGTERM (its AOF flushed) and started again on
the same port and directory.
"""

from __future__ import annotations

import time

import pytest

from celery_durable.codec import unpackb
from celery_durable.extension import extension_for
from tests.apps import faulty
from tests.faults import global_events, results, statuses, wait_until

pytestmark = pytest.mark.slow

RUNS = 12
STEPS = 20
DELAY = 0.2  # each run takes about 4 s: 12 runs on 4 pool processes, about 12 s
OUTAGE = 60.0
BACK_WITHIN = 30.0  # after Redis returns, every run done within this


def test_runs_in_flight_go_on_after_a_minute_without_redis(
    private_redis, private_client, private_workers
):
    ext = extension_for(private_client)
    pair = private_workers.start_many(2, concurrency=2)
    napping = faulty.nap.start(OUTAGE / 2)  # due while Redis is away: the poller's job after
    runs = [faulty.steps.start(STEPS, DELAY) for _ in range(RUNS)]
    wait_until(
        lambda: sum(faulty.step_counts(ext.redis, r.id, 2)[1] for r in runs) >= 4,
        timeout=20,
        what="runs under way",
    )
    private_redis.stop()  # SIGTERM: redis-server flushes its AOF and exits
    stopped_at = time.time()
    time.sleep(OUTAGE)
    private_redis.start()
    back_at = time.time()

    done = results(runs, timeout=BACK_WITHIN)
    finished_at = time.time()
    assert [len(r) for r in done] == [STEPS] * RUNS, statuses(ext, runs)
    assert all(count <= 2 for r in done for count in r), done  # a step at most twice
    assert napping.result(timeout=10) == [1, 1]
    first_step_after = min(
        int(entry_id.split(b"-")[0]) / 1000
        for run in runs
        for entry_id, fields in ext.redis.xrange(ext.keys.run_events(run.id))
        if unpackb(fields[b"e"])["type"] == "step.completed"
        and int(entry_id.split(b"-")[0]) / 1000 > back_at
    )
    print(
        f"outage {back_at - stopped_at:.1f}s: {RUNS} runs completed, 0 failed; first step "
        f"{first_step_after - back_at:.2f}s after Redis returned, all done after "
        f"{finished_at - back_at:.1f}s"
    )
    assert first_step_after - back_at < 10

    # No worker took another for dead: each waited for the others to beat again.
    assert not [e for e in global_events(ext) if e["type"] == "worker.offline"]
    # The workers serve on: new runs, and heartbeats from both.
    assert all(w.is_alive() for w in pair)
    after = [faulty.steps.start(2, 0.0) for _ in range(4)]
    assert results(after, timeout=15) == [[1, 1]] * 4
    beats = dict(ext.redis.zrange(ext.keys.workers(), 0, -1, withscores=True))
    assert {w.hostname.encode() for w in pair} <= set(beats)
    assert all(score > back_at for score in beats.values())
    for worker in pair:
        assert "Traceback" not in worker.log_text(), worker.tail()
