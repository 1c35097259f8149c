"""The usual deploy: SIGTERM (warm shutdown), a grace period, then SIGKILL.

At SIGTERM Celery's consumer closes and forgets the messages it prefetched,
but does not acknowledge them: with the Redis broker they wait in its
unacked set for the visibility timeout (an hour). The worker still holds
them; its record must say so, and the runs they carry must not wait for
the hour.
"""

from __future__ import annotations

import time

import pytest

from tests.apps import faulty
from tests.faults import executions, global_events, wait_until

pytestmark = pytest.mark.slow

RECORDED_WITHIN = faulty.HEARTBEAT_INTERVAL + 0.2
GRACE = 3.0  # the deploy's grace period between SIGTERM and SIGKILL
RECOVERED_WITHIN = faulty.WORKER_TIMEOUT + 2 * faulty.HEARTBEAT_INTERVAL + 5


def _unacked(client, run_id: str) -> bool:
    return any(run_id.encode() in raw for raw in client.hvals("unacked"))


def test_a_run_prefetched_by_a_worker_killed_after_its_grace_period_runs(
    ext, workers, redis_client
):
    victim = workers.start(concurrency=1, extra_args=["--prefetch-multiplier", "4"])
    busy = faulty.gated.start(60.0)
    wait_until(
        lambda: faulty.step_counts(redis_client, busy.id, 2)[1] == 1, 10, "the busy run gated"
    )
    prefetched = faulty.steps.start(3, 0.0)
    wait_until(lambda: victim.log_text().count("] received") == 2, 10, "the run prefetched")
    assert prefetched.status() == "pending"
    survivor = workers.start(concurrency=1)
    time.sleep(RECORDED_WITHIN)

    victim.terminate()  # warm shutdown: it waits for the gated run to finish
    victim.wait_for_log("Warm shutdown", timeout=5)
    time.sleep(GRACE)
    assert victim.is_alive()  # still draining
    victim.kill(children=True)  # the grace period is over
    assert _unacked(redis_client, prefetched.id)  # the broker still waits for its ack

    assert prefetched.result(timeout=RECOVERED_WITHIN) == [1, 1, 1]
    (claim,) = executions(prefetched.events())
    assert claim["data"]["worker"] == survivor.hostname
    wait_until(
        lambda: any(
            e["type"] == "worker.offline" and e["data"]["worker"] == victim.hostname
            for e in global_events(ext)
        ),
        RECOVERED_WITHIN,
        "the victim recovered",
    )
    redis_client.rpush(faulty.gate_key(busy.id), "open")
    assert busy.result(timeout=10) == [1, 2, 1]  # taken over: the gate step ran again
    assert survivor.is_alive()
