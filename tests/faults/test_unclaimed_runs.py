"""A worker dies holding run messages it has received but whose runs it has not claimed.

A run is filed under its worker (and so taken over if that worker dies) only
when its execution claims it. Before that, the worker holds the run's
message: prefetched, or started in a pool process that has not claimed yet.
The worker's record of what it holds covers those runs, and recovering the
worker (or the lost pool process) sends them again.

The message held may itself be a takeover: a run left `running` by a worker
that died, sent again to a second worker that dies before it claims the run:
the dead owner it names is still the run's owner, so it is sent again too.
"""

from __future__ import annotations

import time

import pytest

from tests.apps import faulty
from tests.faults import executions, global_events, wait_until

pytestmark = pytest.mark.slow

RECOVERED_WITHIN = faulty.WORKER_TIMEOUT + 2 * faulty.HEARTBEAT_INTERVAL + 5
# A worker records what it holds promptly after a message arrives and at every
# heartbeat: the kills come later than that, so recovery may rely on the record.
RECORDED_WITHIN = faulty.HEARTBEAT_INTERVAL + 0.2
POOL_CHECK = 5.0  # seconds between two checks of Celery's pool for dead processes
# Noticing the lost pool process, forking a new one and running the run, on a
# loaded machine: without the fix the run never runs at all.
POOL_RECOVERED_WITHIN = 3 * POOL_CHECK + 5


def _unacked(client, run_id: str) -> bool:
    """Whether a message for the run is among the Redis broker's unacked messages."""
    return any(run_id.encode() in raw for raw in client.hvals("unacked"))


def _offline(ext, hostname: str) -> list[dict]:
    return [
        e
        for e in global_events(ext)
        if e["type"] == "worker.offline" and e["data"]["worker"] == hostname
    ]


def test_a_run_started_but_not_yet_claimed_by_a_killed_worker_is_recovered(
    ext, workers, redis_client
):
    pair = workers.start_many(2, concurrency=1)
    run = faulty.held.start(3)
    pid = int(wait_until(lambda: redis_client.get(faulty.held_key(run.id)), 10, "the run held"))
    (holder,) = [w for w in pair if pid in w.pool_pids()]
    (other,) = [w for w in pair if w is not holder]
    assert run.status() == "pending"  # received, started, not claimed
    time.sleep(RECORDED_WITHIN)
    holder.kill(children=True)
    # Its message waits in the broker's unacked messages for the visibility
    # timeout (an hour): recovery must not wait for that.
    assert _unacked(redis_client, run.id)

    wait_until(lambda: _offline(ext, holder.hostname), RECOVERED_WITHIN, "the holder recovered")
    assert run.result(timeout=5) == [1, 1, 1]  # sent again, run on the other worker
    (claim,) = executions(run.events())
    assert claim["data"]["worker"] == other.hostname
    assert other.is_alive()


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
    time.sleep(RECORDED_WITHIN)
    victim.kill(children=True)
    assert all(_unacked(redis_client, run.id) for run in prefetched)

    survivor = workers.start(concurrency=1)
    wait_until(lambda: _offline(ext, victim.hostname), RECOVERED_WITHIN, "the victim recovered")
    redis_client.rpush(faulty.gate_key(busy.id), "open")
    assert busy.result(timeout=10) == [1, 2, 1]  # taken over: the gate step ran again
    for run in prefetched:  # sent again too
        assert run.result(timeout=5) == [1, 1, 1]
        assert len(executions(run.events())) == 1
    assert survivor.is_alive()


def test_a_run_whose_pool_process_died_before_its_claim_is_sent_again(ext, workers, redis_client):
    (worker,) = workers.start_many(1, concurrency=1)
    run = faulty.held.start(3)
    pid = int(wait_until(lambda: redis_client.get(faulty.held_key(run.id)), 10, "the run held"))
    assert run.status() == "pending"
    worker.kill_pool_child(pid)
    # Celery acks the message of a task whose pool process was lost
    # (task_reject_on_worker_lost is off): the worker itself sends the run again.
    assert run.result(timeout=POOL_RECOVERED_WITHIN) == [1, 1, 1]
    (claim,) = executions(run.events())
    assert claim["data"]["pid"] != pid
    assert worker.is_alive()


def _takeover_held_by_a_second_worker(ext, workers, redis_client):
    """A run left running by a killed worker, whose takeover message a second
    worker holds (in a pool process, before the claim): (run, first, second)."""
    first = workers.start(concurrency=1)
    run = faulty.gated.start(30.0)
    wait_until(lambda: faulty.step_counts(redis_client, run.id, 2)[1] == 1, 10, "the run gated")
    faulty.hold_next(redis_client, run.id)  # its next delivery: the takeover
    second = workers.start(concurrency=1)
    first.kill(children=True)
    redis_client.rpush(faulty.gate_key(run.id), "open")  # for the gate step's next run
    pid = int(
        wait_until(
            lambda: redis_client.get(faulty.held_key(run.id)), RECOVERED_WITHIN, "takeover held"
        )
    )
    assert pid in second.pool_pids()
    meta = ext.journal.meta(run.id)
    assert meta["status"] == "running" and meta["owner"].startswith(f"{first.hostname}/")
    time.sleep(RECORDED_WITHIN)
    return run, first, second


def test_a_takeover_held_by_a_worker_that_dies_is_sent_again(ext, workers, redis_client):
    run, _, second = _takeover_held_by_a_second_worker(ext, workers, redis_client)
    second.kill(children=True)
    third = workers.start(concurrency=1)
    wait_until(lambda: _offline(ext, second.hostname), RECOVERED_WITHIN, "the second recovered")
    assert third.is_alive()
    assert run.result(timeout=5) == [1, 2, 1]


def test_a_takeover_whose_pool_process_died_before_its_claim_is_sent_again(
    ext, workers, redis_client
):
    run, _, second = _takeover_held_by_a_second_worker(ext, workers, redis_client)
    second.kill_pool_child(int(redis_client.get(faulty.held_key(run.id))))
    assert second.is_alive()
    assert run.result(timeout=POOL_RECOVERED_WITHIN) == [1, 2, 1]
