"""Redis loses writes it acknowledged (a crash before fsync, a failover to a
lagging replica): the journal of a run ends *before* what its execution wrote.

The test puts a run's journal back as it was earlier (its meta hash and the
stream entries after that point), exactly what such a loss leaves, while a
real worker executes it or after it finished. The run must still complete:
an execution that finds the journal behind it starts again from what the
journal holds (it is not another execution's work), and a worker takes over
a run filed under it as running that nothing of it executes any more.
`runs list --status stuck` and `runs resume` are checked on such a run too.
"""

from __future__ import annotations

import time

import pytest

from celery_durable.extension import RUN_TASK_NAME
from celery_durable.workflows.runs import get_run
from celery_durable.workflows.stuck import list_stuck, resume_run
from tests.apps import faulty
from tests.faults import executions, wait_until

pytestmark = pytest.mark.slow

ADOPTED_WITHIN = 3 * faulty.HEARTBEAT_INTERVAL + 5


def _snapshot(ext, run_id: str) -> tuple[dict, bytes]:
    """The run's meta hash and the id of its last stream entry, to go back to."""
    meta = ext.redis.hgetall(ext.keys.run_meta(run_id))
    ((last_id, _),) = ext.redis.xrevrange(ext.keys.run_events(run_id), count=1)
    return meta, last_id


def _lose_writes_after(ext, run_id: str, snapshot: tuple[dict, bytes]) -> int:
    """Put the journal back as it was at `snapshot`; how many events were lost."""
    meta, last_id = snapshot
    later = ext.redis.xrange(ext.keys.run_events(run_id), min=f"({last_id.decode()}")
    pipe = ext.redis.pipeline(transaction=True)
    if later:
        pipe.xdel(ext.keys.run_events(run_id), *[entry_id for entry_id, _ in later])
    pipe.delete(ext.keys.run_meta(run_id))
    pipe.hset(ext.keys.run_meta(run_id), mapping=meta)
    pipe.execute()
    return len(later)


def test_an_execution_that_finds_the_journal_behind_it_starts_again(ext, workers, redis_client):
    (worker,) = workers.start_many(1, concurrency=1)
    run_id = "lost-claim"
    name = faulty.gated.definition.name
    ext.journal.create(run_id, name, {"name": name, "args": [30.0], "kwargs": {}})
    before_claim = _snapshot(ext, run_id)
    ext.dispatch(run_id)
    wait_until(lambda: faulty.step_counts(redis_client, run_id, 2)[1] == 1, 10, "the run gated")
    assert _lose_writes_after(ext, run_id, before_claim) == 2  # its claim and step 0
    redis_client.rpush(faulty.gate_key(run_id), "open", "open")  # for this try and the next

    # Before: the execution took the gap for another owner and stopped; the run
    # stayed pending with no message and no timer left.
    assert get_run(run_id).result(timeout=10) == [2, 2, 1]
    worker.wait_for_log("behind the 3 this execution wrote", timeout=1)
    (claim,) = executions(get_run(run_id).events())  # the lost claim is gone for good
    assert claim["data"]["worker"] == worker.hostname


def test_a_run_whose_end_was_lost_is_taken_over_by_its_own_worker(ext, workers, redis_client):
    (worker,) = workers.start_many(1, concurrency=1)
    run = faulty.gated.start(30.0)
    wait_until(lambda: faulty.step_counts(redis_client, run.id, 2)[1] == 1, 10, "the run gated")
    gated = _snapshot(ext, run.id)  # running, step 0 recorded
    redis_client.rpush(faulty.gate_key(run.id), "open", "open")
    assert run.result(timeout=10) == [1, 1, 1]
    wait_until(
        lambda: f"{RUN_TASK_NAME}[" in worker.log_text() and " succeeded in " in worker.log_text(),
        5,
        "its task done",
    )

    # Redis loses the gate step, the last step and the end: the journal says
    # `running` under this (live) worker again, and it is filed there again.
    assert _lose_writes_after(ext, run.id, gated) == 3
    ext.redis.sadd(ext.keys.worker_runs(worker.hostname), run.id)
    assert run.status() == "running"
    began = time.monotonic()
    assert run.result(timeout=ADOPTED_WITHIN) == [1, 2, 2]  # taken over: the lost steps ran again
    print(f"taken over and completed {time.monotonic() - began:.1f}s after the loss")
    worker.wait_for_log("nothing here executes it", timeout=1)
    assert list_stuck(app=ext.app) == ([], None)


def test_a_stuck_run_is_listed_and_resumed_and_a_fine_one_is_left_alone(ext, workers, redis_client):
    (worker,) = workers.start_many(1, concurrency=1)
    name = faulty.steps.definition.name
    # Recorded as start() would be, but its message and its timer are lost.
    ext.journal.create("lost-message", name, {"name": name, "args": [2, 0.0], "kwargs": {}})
    fine = faulty.nap.start(30.0)
    wait_until(lambda: fine.status() == "sleeping", 10, "the nap sleeping")

    stuck, cursor = list_stuck(app=ext.app)
    assert [(r["id"], r["status"]) for r in stuck] == [("lost-message", "pending")] and not cursor
    assert "no dispatch timer" in stuck[0]["reason"]
    assert "not stuck: nothing done" in resume_run(fine.id, app=ext.app)
    assert fine.status() == "sleeping" and len(executions(fine.events())) == 1
    assert "sent again" in resume_run("lost-message", app=ext.app)
    assert get_run("lost-message").result(timeout=10) == [1, 1]
    assert list_stuck(app=ext.app) == ([], None)
    assert worker.is_alive()
