"""Replay asks for the steps the journal recorded, in order, or the run is blocked."""

from __future__ import annotations

import contextlib

import celery_durable
from celery_durable import step, workflow
from celery_durable.extension import extension_for
from tests import steps  # noqa: F401 - registers tests.arithmetic


def _recorded_run(app, run_id: str, workflow_name: str, step_name: str) -> None:
    """A run whose journal says position 0 was `step_name` (as an older code did)."""
    ext = extension_for(app)
    ext.journal.create(run_id, workflow_name, {"name": workflow_name, "args": [1, 2], "kwargs": {}})
    ext.journal.append(
        run_id,
        1,
        [
            (
                "step.completed",
                {
                    "position": 0,
                    "name": step_name,
                    "attempt": 1,
                    "result": 3,
                    "started_at": 0.0,
                    "duration": 0.0,
                },
            ),
        ],
    )
    ext.dispatch(run_id)


def _blocked_error(run) -> str:
    last = run.events()[-1]
    assert last["type"] == "workflow.blocked", last
    assert last["data"]["error"]["type"].endswith("NonDeterminismError")
    return str(last["data"]["error"]["message"])


def test_a_different_step_at_a_recorded_position_blocks_naming_both(
    durable_app, durable_worker, durable_wait_for_status, counter
):
    _recorded_run(durable_app, "changed", "tests.arithmetic", "refund")
    run = celery_durable.get_run("changed")
    durable_wait_for_status(run, "blocked", timeout=15)
    message = _blocked_error(run)
    assert "recorded step 'refund'" in message and "now calls step 'add'" in message
    assert "position 0" in message
    assert counter("add") == 0 and counter("double") == 0


def test_a_workflow_cannot_swallow_the_non_determinism_error(
    durable_app, durable_worker, durable_wait_for_status
):
    _recorded_run(durable_app, "swallowed", "tests.swallowing", "refund")
    run = celery_durable.get_run("swallowed")
    durable_wait_for_status(run, "blocked", timeout=15)
    assert "'refund'" in _blocked_error(run)


def test_replay_with_the_same_steps_is_not_flagged(durable_app, durable_worker):
    _recorded_run(durable_app, "same", "tests.arithmetic", "add")
    assert celery_durable.get_run("same").result(timeout=15)["total"] == 3


@step
def charge() -> int:
    return 1


@workflow(name="tests.swallowing")
def swallowing(a: int, b: int) -> str:
    with contextlib.suppress(Exception):  # swallows whatever charge() raises
        charge()
    return "carried on"
