"""patched() and deprecated_patch(): old runs keep the old path, new runs take the new one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import celery_durable
from celery_durable import deprecated_patch, patched
from celery_durable.errors import ConfigurationError, NonDeterminismError, NotInWorkflowError
from tests.apps import deploys


@pytest.fixture
def code() -> Iterator[dict]:
    """The 'deployed' version of tests.deploys.order; back to 1 afterwards."""
    deploys.CODE["version"] = 1
    yield deploys.CODE
    deploys.CODE["version"] = 1


def _types(run) -> list[str]:
    return [e["type"] for e in run.events()]


def test_an_old_run_keeps_the_old_path_and_a_new_run_takes_the_new_one(
    durable_app, durable_worker, durable_wait_for_status, code, counter
):
    old = celery_durable.start(deploys.order, 1)
    durable_wait_for_status(old, "waiting")  # went past the patch point under version 1
    code["version"] = 2  # the deploy
    new = celery_durable.start(deploys.order, 2)
    durable_wait_for_status(new, "waiting")
    assert "patch.marked" in _types(new) and "patch.marked" not in _types(old)

    celery_durable.send_event(old.id, "go")
    celery_durable.send_event(new.id, "go")
    assert old.result(timeout=15) == {"shipped": "shipped-1", "checked": False, "version": 2}
    assert new.result(timeout=15) == {"shipped": "shipped-2", "checked": True, "version": 2}
    assert counter("fraud_check") == 1 and counter("charge") == 2 and counter("ship") == 2


def test_a_run_that_reaches_the_patch_after_the_deploy_takes_the_new_path(
    durable_app, durable_worker, durable_wait_for_status, code
):
    """What decides is where the history stood, not when the run started."""

    run = celery_durable.start(deploys.early_wait, 3)
    durable_wait_for_status(run, "waiting")  # before the patch point under version 1
    code["version"] = 2
    celery_durable.send_event(run.id, "start")
    durable_wait_for_status(run, "waiting")
    celery_durable.send_event(run.id, "go")
    assert run.result(timeout=15)["checked"] is True


def test_deprecated_patch_replays_marked_runs_and_refuses_runs_past_it_unmarked(
    durable_app, durable_worker, durable_wait_for_status, code
):
    old = celery_durable.start(deploys.order, 1)
    durable_wait_for_status(old, "waiting")
    code["version"] = 2
    marked = celery_durable.start(deploys.order, 2)
    durable_wait_for_status(marked, "waiting")
    code["version"] = 3  # step two of retiring the patch
    fresh = celery_durable.start(deploys.order, 3)
    durable_wait_for_status(fresh, "waiting")
    assert "patch.marked" in _types(fresh)  # a later replay must know it came this way

    for run in (old, marked, fresh):
        celery_durable.send_event(run.id, "go")
    assert marked.result(timeout=15)["checked"] is True
    assert fresh.result(timeout=15)["checked"] is True
    durable_wait_for_status(old, "blocked", timeout=15)
    reason = str(old.events()[-1]["data"]["error"]["message"])
    assert "deprecated_patch('fraud-check')" in reason, reason


def test_patched_outside_a_workflow_or_inside_a_step_is_refused(durable_app, durable_worker):
    with pytest.raises(NotInWorkflowError, match="fraud"):
        patched("fraud")
    with pytest.raises(NotInWorkflowError, match="fraud"):
        deprecated_patch("fraud")
    run = celery_durable.start(deploys.patch_in_step, 1)
    with pytest.raises(ConfigurationError, match="inside a step"):
        run.result(timeout=15)


def test_a_change_id_must_be_a_non_empty_string(durable_app, durable_worker):
    run = celery_durable.start(deploys.bad_change_id)
    with pytest.raises(ValueError, match="change id"):
        run.result(timeout=15)


def test_non_determinism_names_position_recorded_and_asked():
    error = NonDeterminismError("diverged", position=2, recorded="step 'a'", asked="step 'b'")
    assert (error.position, error.recorded, error.asked) == (2, "step 'a'", "step 'b'")


def _history(*commands: tuple[str, dict]) -> dict:
    """An exported history of tests.deploys.order: started, executing, then `commands`."""
    events = [
        ("workflow.started", {"name": "tests.deploys.order", "args": [4], "kwargs": {}}),
        ("workflow.executing", {"worker": "w", "pid": 1, "attempt": 1}),
        *commands,
    ]
    return {
        "format": "celery_durable.history/1",
        "run_id": "r",
        "workflow": "tests.deploys.order",
        "status": "waiting",
        "events": [
            {"seq": seq, "type": kind, "ts": 1_700_000_000.0 + seq, "data": data}
            for seq, (kind, data) in enumerate(events, start=1)
        ],
    }


def _step(position: int, name: str, result: object) -> tuple[str, dict]:
    data = {"position": position, "name": name, "attempt": 1, "result": result}
    return ("step.completed", {**data, "started_at": 0.0, "duration": 0.0})


MARKED = _history(
    _step(0, "charge", "receipt-4"),
    _step(1, "fraud_check", True),
    ("patch.marked", {"change_id": "fraud-check", "position": 1}),
    _step(2, "ship", "shipped-4"),
    ("event.waiting", {"position": 3, "name": "go", "timeout_at": None}),
)
UNMARKED = _history(
    _step(0, "charge", "receipt-4"),
    _step(1, "ship", "shipped-4"),
    ("event.waiting", {"position": 2, "name": "go", "timeout_at": None}),
)
BEFORE_THE_POINT = _history(_step(0, "charge", "receipt-4"))


@pytest.mark.parametrize(
    ("version", "history", "replays"),
    [
        (1, UNMARKED, True),
        (1, MARKED, False),  # an old worker cannot replay what new code wrote
        (2, UNMARKED, True),  # patched() is False: the old path
        (2, MARKED, True),  # the marker: the new path
        (2, BEFORE_THE_POINT, True),  # not there yet: the new code decides
        (3, MARKED, True),
        (3, BEFORE_THE_POINT, True),
        (3, UNMARKED, False),  # deprecated_patch: the old path is gone
        (4, MARKED, True),  # the patch removed: markers take no position
        (4, UNMARKED, False),
    ],
)
def test_which_histories_replay_under_which_code(durable_replay, code, version, history, replays):
    """No Redis, no worker: the replay decisions of patched() and deprecated_patch()."""
    code["version"] = version
    if replays:
        durable_replay(history)
    else:
        with pytest.raises(pytest.fail.Exception, match="diverges"):
            durable_replay(history)
