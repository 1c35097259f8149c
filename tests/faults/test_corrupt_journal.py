"""A corrupt or unknown event in a run's stream fails that run, and only that run."""

from __future__ import annotations

import time

import pytest

from celery_durable.codec import packb
from celery_durable.errors import JournalCorruptError
from tests.apps import faulty
from tests.faults import global_events, results, wait_until

pytestmark = pytest.mark.slow

NAP = 2.0  # seconds: time enough to spoil the journal of a sleeping run


def _garbage(seq: int) -> bytes:
    return b"\xc1 not msgpack"  # 0xc1 is never used in msgpack


def _unknown(seq: int) -> bytes:
    return packb({"seq": seq, "type": "workflow.teleported", "ts": time.time(), "data": {}})


@pytest.mark.parametrize(
    ("spoil", "complaint"),
    [(_garbage, "cannot decode event"), (_unknown, "unknown type 'workflow.teleported'")],
    ids=["garbage", "unknown-type"],
)
def test_a_corrupt_event_fails_its_run_and_the_worker_serves_others(
    ext, workers, redis_client, spoil, complaint
):
    (worker,) = workers.start_many(1, concurrency=1)
    run = faulty.nap.start(NAP)
    wait_until(lambda: run.status() == "sleeping", timeout=10, what="the run asleep")
    seq = int(ext.journal.meta(run.id)["seq"])
    entry = redis_client.xadd(ext.keys.run_events(run.id), {"e": spoil(seq + 1)})
    assert run.status() == "sleeping"  # the sleep is not over yet

    # Its timer wakes it; the worker cannot replay it and fails it, saying why.
    with pytest.raises(JournalCorruptError) as failed:
        run.result(timeout=NAP + 10)
    message = str(failed.value)
    assert run.id in message and entry.decode() in message and complaint in message
    assert run.status() == "failed"
    assert faulty.step_counts(redis_client, run.id, 3) == [1, 0, 0]  # it went no further
    # Reported in the global stream too (written right after the journal's final event).
    wait_until(
        lambda: (
            [e["data"]["run_id"] for e in global_events(ext) if e["type"] == "workflow.failed"]
            == [run.id]
        ),
        timeout=5,
        what="workflow.failed in the global stream",
    )
    worker.wait_for_log(f"run {run.id} failed: run {run.id}, stream entry", timeout=5)

    # The same worker goes on with other runs.
    others = [faulty.steps.start(3, 0.0) for _ in range(5)]
    assert results(others, timeout=15) == [[1, 1, 1]] * 5
    assert worker.is_alive()
    assert "WorkerLostError" not in worker.log_text()
