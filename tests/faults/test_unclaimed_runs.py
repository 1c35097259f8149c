"""A worker dies holding run messages it has received but whose runs it has not claimed.

A run is filed under its worker (and so taken over if that worker dies) only
when its execution claims it. Before that, the worker holds the run's
message: prefetched, or started in a pool process that has not claimed yet.
These tests show that such runs are not recovered (they are xfail: the bug is
described in each reason).
"""

from __future__ import annotations

import pytest

from celery_durable.errors import ResultTimeoutError
from tests.apps import faulty
from tests.faults import global_events, wait_until

pytestmark = pytest.mark.slow

RECOVERED_WITHIN = faulty.WORKER_TIMEOUT + 2 * faulty.HEARTBEAT_INTERVAL + 5
POOL_CHECK = 5.0  # seconds between two checks of Celery's pool for dead processes

UNFILED = (
    "celery_durable/worker/holdings.py snapshot() leaves run tasks out of a worker's "
    "record of held messages ('runs are tracked on their own'), but runs are tracked "
    "(worker_runs) only from their claim: a run whose message a dead worker held "
    "before the claim is neither taken over nor reported, and stays pending until the "
    "broker's visibility_timeout (an hour with Redis) redelivers the message"
)


def _unacked(client, run_id: str) -> bool:
    """Whether a message for the run is among the Redis broker's unacked messages."""
    return any(run_id.encode() in raw for raw in client.hvals("unacked"))


def _offline(ext, hostname: str) -> list[dict]:
    return [
        e
        for e in global_events(ext)
        if e["type"] == "worker.offline" and e["data"]["worker"] == hostname
    ]


@pytest.mark.xfail(strict=True, raises=ResultTimeoutError, reason=UNFILED)
def test_a_run_started_but_not_yet_claimed_by_a_killed_worker_is_recovered(
    ext, workers, redis_client
):
    pair = workers.start_many(2, concurrency=1)
    run = faulty.held.start(3)
    pid = int(wait_until(lambda: redis_client.get(faulty.held_key(run.id)), 10, "the run held"))
    (holder,) = [w for w in pair if pid in w.pool_pids()]
    (other,) = [w for w in pair if w is not holder]
    assert run.status() == "pending"  # received, started, not claimed
    holder.kill(children=True)
    # Its message waits in the broker's unacked messages for the visibility timeout.
    assert _unacked(redis_client, run.id)

    wait_until(lambda: _offline(ext, holder.hostname), RECOVERED_WITHIN, "the holder recovered")
    assert other.is_alive()
    # Expected: the run is sent again and executes on the other worker.
    assert run.result(timeout=4) == [1, 1, 1]


@pytest.mark.xfail(strict=True, raises=ResultTimeoutError, reason=UNFILED)
def test_runs_prefetched_by_a_killed_worker_are_recovered(ext, workers, redis_client):
    # Celery's default prefetch multiplier (4): the worker holds up to four
    # messages, one running and three waiting for its pool process.
    victim = workers.start(concurrency=1, extra_args=["--prefetch-multiplier", "4"])
    busy = faulty.gated.start(30.0)
    wait_until(
        lambda: faulty.step_counts(redis_client, busy.id, 2)[1] == 1, 10, "the busy run gated"
    )
    prefetched = [faulty.steps.start(3, 0.0) for _ in range(3)]
    wait_until(lambda: victim.log_text().count("] received") == 4, 10, "the three runs prefetched")
    assert [run.status() for run in prefetched] == ["pending"] * 3
    victim.kill(children=True)
    assert all(_unacked(redis_client, run.id) for run in prefetched)

    survivor = workers.start(concurrency=1)
    wait_until(lambda: _offline(ext, victim.hostname), RECOVERED_WITHIN, "the victim recovered")
    redis_client.rpush(faulty.gate_key(busy.id), "open")
    wait_until(lambda: busy.status() == "completed", 10, "the taken-over run completed")
    assert survivor.is_alive()
    # Expected: the prefetched runs are sent again too.
    for run in prefetched:
        assert run.result(timeout=4) == [1, 1, 1]


@pytest.mark.xfail(
    strict=True,
    raises=ResultTimeoutError,
    reason=(
        "celery_durable/worker/bootstep.py _on_failure re-dispatches only a run that is "
        "'running' under the dead pool process; a pool process that dies after it "
        "received a run but before its claim leaves the run 'pending' (or 'sleeping'/"
        "'waiting' with its timer already released), and Celery acks the message on "
        "WorkerLostError (task_reject_on_worker_lost is off): the run never executes"
    ),
)
def test_a_run_whose_pool_process_died_before_its_claim_is_sent_again(ext, workers, redis_client):
    (worker,) = workers.start_many(1, concurrency=1)
    run = faulty.held.start(3)
    pid = int(wait_until(lambda: redis_client.get(faulty.held_key(run.id)), 10, "the run held"))
    assert run.status() == "pending"
    worker.kill_pool_child(pid)
    wait_until(
        lambda: "WorkerLostError" in worker.log_text(), POOL_CHECK + 3, "the pool process lost"
    )
    assert worker.is_alive()
    assert run.status() == "pending"
    # Celery acks its message: not even the visibility timeout brings it back.
    wait_until(lambda: not _unacked(redis_client, run.id), 3, "the message acked")
    # Expected: the worker sends the run again, and its new pool process runs it.
    assert run.result(timeout=4) == [1, 1, 1]
