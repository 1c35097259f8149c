"""A worker dies: kill -9 of the whole worker, and of one pool child.

Recorded steps never run again; the step that was running when the process
died runs once more (at least once: see the README's delivery guarantees).
"""

from __future__ import annotations

import time

import pytest

from celery_durable.workflows.runs import RunHandle
from tests.apps import faulty
from tests.faults import (
    check_steps_once,
    executions,
    global_events,
    results,
    statuses,
    wait_until,
)

pytestmark = pytest.mark.slow

RUNS = 100
STEPS = 10
DELAY = 0.03  # seconds per step: a run takes about a third of a second
POOL_CHECK = 5.0  # seconds between two checks of Celery's pool for dead processes


def _victim_mid_run(ext, victim, runs: list[RunHandle]) -> bool:
    """A good moment for the kill: a fifth of the runs done, and both of the
    victim's pool processes in the middle of a run with three or more steps to
    go, so that the kill lands inside runs, not between two messages (a run
    received but not claimed yet is not recovered: see test_unclaimed_runs.py)."""
    if statuses(ext, runs).get("completed", 0) < RUNS // 5:
        return False
    held = ext.redis.smembers(ext.keys.worker_runs(victim.hostname))
    if len(held) != victim.concurrency:
        return False
    pipe = ext.redis.pipeline(transaction=False)
    for run_id in held:
        pipe.hmget(ext.keys.run_meta(run_id.decode()), "seq", "owner")
    for seq, owner in pipe.execute():
        # seq: workflow.started, workflow.executing, then one event per step.
        if not owner or not owner.decode().startswith(f"{victim.hostname}/"):
            return False
        if int(seq) - 2 > STEPS - 3:
            return False
    return True


def test_a_worker_killed_mid_run_has_its_runs_taken_over(ext, workers, redis_client):
    victim, survivor = workers.start_many(2, concurrency=2)
    runs = [faulty.steps.start(STEPS, DELAY) for _ in range(RUNS)]
    wait_until(
        lambda: _victim_mid_run(ext, victim, runs),
        timeout=30,
        what=lambda: f"the victim busy mid-run (runs are {statuses(ext, runs)})",
    )
    victim.kill(children=True)
    killed_at = time.time()
    held = {m.decode() for m in redis_client.smembers(ext.keys.worker_runs(victim.hostname))}
    assert len(held) == victim.concurrency, held

    for run, result in zip(runs, results(runs, timeout=60), strict=True):
        assert len(result) == STEPS, (run.id, result)

    taken_over: set[str] = set()
    for run in runs:
        events = run.events()
        claims = executions(events)
        takeovers = [e for e in claims if "takeover" in e["data"]]
        counts = faulty.step_counts(redis_client, run.id, STEPS)
        if run.id in held:
            assert len(claims) == 2 and len(takeovers) == 1, (run.id, claims)
            takeover = takeovers[0]
            assert takeover["data"]["takeover"].startswith(f"{victim.hostname}/")
            assert takeover["data"]["worker"] == survivor.hostname
            assert claims[0]["data"]["worker"] == victim.hostname
            taken_over.add(run.id)
            check_steps_once(events, counts, may_repeat_after=takeover["seq"])
        else:
            assert len(claims) == 1 and not takeovers, (run.id, claims)
            check_steps_once(events, counts, may_repeat_after=None)
    assert taken_over == held

    offline = wait_until(
        lambda: [
            e
            for e in global_events(ext)
            if e["type"] == "worker.offline" and e["data"]["worker"] == victim.hostname
        ],
        timeout=5,
        what="worker.offline for the victim in the global stream",
    )
    assert len(offline) == 1, offline
    assert offline[0]["data"]["recovered_by"] == survivor.hostname
    assert sorted(offline[0]["data"]["runs"]) == sorted(held)
    # Noticed once the victim missed its heartbeats for `WORKER_TIMEOUT`, not
    # when the broker's visibility_timeout (an hour) would redeliver anything.
    noticed = offline[0]["ts"] - killed_at
    assert noticed < faulty.WORKER_TIMEOUT + 2 * faulty.HEARTBEAT_INTERVAL + 2, noticed
    assert survivor.is_alive()


def test_a_pool_child_killed_in_a_step_is_taken_over_by_its_own_worker(ext, workers, redis_client):
    (worker,) = workers.start_many(1, concurrency=1)
    run = faulty.gated.start(30.0)
    wait_until(
        lambda: faulty.step_counts(redis_client, run.id, 3)[1] == 1,
        timeout=10,
        what="the run inside its gate step",
    )
    (child,) = worker.pool_pids()
    owner = ext.journal.meta(run.id)["owner"]
    assert owner == f"{worker.hostname}/{child}"
    worker.kill_pool_child(child)
    killed_at = time.monotonic()

    # The worker's main process takes the run over at once: the new pool
    # process replays step 0 and enters the gate again.
    wait_until(
        lambda: faulty.step_counts(redis_client, run.id, 3)[1] == 2,
        timeout=10,
        what="the gate step entered again",
    )
    redis_client.rpush(faulty.gate_key(run.id), "open")
    assert run.result(timeout=10) == [1, 2, 1]
    # The pool notices a dead child at its next check (Celery's AsynPool runs
    # maintain_pool every 5 s); the takeover follows at once. There is no
    # other worker to recover it, and its own monitor never recovers itself.
    assert time.monotonic() - killed_at < POOL_CHECK + 3
    assert worker.is_alive()

    events = run.events()
    first, second = executions(events)
    assert first["data"]["worker"] == second["data"]["worker"] == worker.hostname
    assert first["data"]["pid"] == child
    assert second["data"]["pid"] != child
    assert second["data"]["takeover"] == owner
    assert (
        check_steps_once(
            events, faulty.step_counts(redis_client, run.id, 3), may_repeat_after=second["seq"]
        )
        == 1
    )
    assert "lost its pool process" in worker.log_text()
