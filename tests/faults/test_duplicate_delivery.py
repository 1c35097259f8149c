"""The same run task delivered twice at once, to two idle workers."""

from __future__ import annotations

import uuid

import pytest

from celery_durable import get_run
from celery_durable.extension import RUN_TASK_NAME
from tests.apps import faulty
from tests.faults import check_steps_once, executions
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

ROUNDS = 5
STEPS = 10


def test_a_message_delivered_to_two_workers_executes_the_run_once(
    client_app, ext, workers, redis_client
):
    pair = workers.start_many(2, concurrency=1)
    for _ in range(ROUNDS):
        run_id = uuid.uuid4().hex
        # Recorded as start() would, but not dispatched: the test sends it twice.
        ext.journal.create(
            run_id,
            faulty.steps.definition.name,
            {"name": faulty.steps.definition.name, "args": [STEPS, 0.0], "kwargs": {}},
        )
        task_id = str(uuid.uuid4())
        for _ in range(2):  # both workers idle: usually each takes one, or one takes both
            client_app.send_task(RUN_TASK_NAME, args=(run_id,), task_id=task_id)
        run = get_run(run_id)
        assert run.result(timeout=15) == [1] * STEPS
        # Both deliveries are over, wherever they went: the loser stopped (it
        # found the run claimed, or lost the claim) and wrote nothing.
        done = f"{RUN_TASK_NAME}[{task_id}] succeeded"
        wait_until(
            lambda done=done: sum(w.log_text().count(done) for w in pair) == 2,
            timeout=10,
            what=f"both deliveries of {task_id} finished",
        )
        events = run.events()
        types = [e["type"] for e in events]
        assert types == ["workflow.started", "workflow.executing"] + ["step.completed"] * STEPS + [
            "workflow.completed"
        ], types
        assert len(executions(events)) == 1
        check_steps_once(
            events, faulty.step_counts(redis_client, run_id, STEPS), may_repeat_after=None
        )
        for worker in pair:
            assert not redis_client.sismember(ext.keys.worker_runs(worker.hostname), run_id)
    assert all(w.is_alive() for w in pair)
