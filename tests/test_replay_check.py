"""`replay-check`, `runs export` and `durable_replay`: divergences found before a deploy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

import celery_durable
from celery_durable.extension import extension_for
from celery_durable.workflows.replay import load_history, replay_check
from tests.apps import deploys


@pytest.fixture
def in_flight(durable_app, durable_worker, durable_wait_for_status, code):
    """Runs left under version 1: one waiting for "go", one sleeping for an hour."""
    waiting = celery_durable.start(deploys.order, 1)
    sleeping = celery_durable.start(deploys.sleeper, 2)
    durable_wait_for_status(waiting, "waiting")
    durable_wait_for_status(sleeping, "sleeping")
    return waiting, sleeping


def _snapshot(app: Celery, runs) -> list:
    ext = extension_for(app)
    return [(ext.redis.xlen(ext.keys.run_events(r.id)), r.status()) for r in runs] + [
        sorted(ext.redis.zrange(ext.keys.timers(), 0, -1))
    ]


def test_replay_check_exit_codes_and_output_across_a_code_change(
    durable_app, in_flight, code, cli, counter
):
    waiting, sleeping = in_flight
    before, bodies = _snapshot(durable_app, in_flight), counter("charge")

    same = cli("replay-check")
    assert same.exit_code == 0, same.output
    assert "2 run(s) replayed" in same.output and "0 would diverge" in same.output

    code["version"] = 4  # a step added where both runs' histories already went past
    broken = cli("replay-check")
    assert broken.exit_code == 1, broken.output
    assert broken.output.splitlines()[0].split()[:4] == ["RUN", "WORKFLOW", "STATUS", "POSITION"]
    assert waiting.id in broken.output and sleeping.id in broken.output

    report = cli("replay-check", "--json")
    assert report.exit_code == 1
    found = {d["run_id"]: d for d in json.loads(report.output)["divergences"]}
    assert found[waiting.id]["position"] == 1 and found[sleeping.id]["position"] == 1
    assert found[waiting.id]["recorded"] == "step 'ship'"
    assert found[sleeping.id]["recorded"] == "sleep 'sleep'"
    assert found[sleeping.id]["status"] == "sleeping"
    assert found[sleeping.id]["asked"] == "step 'fraud_check'"
    assert found[sleeping.id]["workflow"] == "tests.deploys.sleeper"

    only = json.loads(cli("replay-check", "--json", "--workflow", "tests.deploys.order").output)
    assert [d["run_id"] for d in only["divergences"]] == [waiting.id] and only["checked"] == 1
    assert json.loads(cli("replay-check", "--json", "--limit", "1").output)["checked"] == 1
    none = cli("replay-check", "--status", "completed")
    assert none.exit_code == 0 and "0 run(s) replayed" in none.output
    bad = cli("replay-check", "--status", "sleepy")
    assert bad.exit_code != 0 and "unknown status 'sleepy'" in bad.output

    code["version"] = 5  # the new code raises where the history went on
    (bug,) = json.loads(cli("replay-check", "--json", "--workflow", "tests.deploys.order").output)[
        "divergences"
    ]
    assert (bug["position"], bug["recorded"], bug["asked"]) == (
        1,
        "step 'ship'",
        "raise RuntimeError",
    )
    assert "a bug in the new code" in bug["message"]

    code["version"] = 2  # the same change behind patched(): safe
    assert cli("replay-check", "--workflow", "tests.deploys.order").exit_code == 0

    # Nothing was written, no step body ran.
    assert _snapshot(durable_app, in_flight) == before and counter("charge") == bodies


def test_replay_check_reports_a_workflow_missing_from_the_code(durable_app, durable_worker, cli):
    ext = extension_for(durable_app)
    ext.journal.create("gone", "tests.deploys.removed", {"name": "tests.deploys.removed"})
    ext.timers.dispatched("gone")
    report = replay_check(app=durable_app, statuses=("pending",))
    (divergence,) = report.divergences
    assert divergence.position is None and "not registered" in divergence.message


def test_finished_runs_are_checked_when_asked(durable_app, durable_worker, code):
    run = celery_durable.start(deploys.order, 3)
    celery_durable.send_event(run.id, "go")
    run.result(timeout=15)
    assert replay_check(app=durable_app).checked == 0  # unfinished only, by default
    assert replay_check(app=durable_app, statuses=("completed",)).divergences == []
    code["version"] = 4
    (found,) = replay_check(app=durable_app, statuses=("completed",)).divergences
    assert found.run_id == run.id


def test_export_and_durable_replay_round_trip(
    durable_app, durable_worker, durable_wait_for_status, durable_replay, code, cli, tmp_path
):
    old = celery_durable.start(deploys.order, 1)
    durable_wait_for_status(old, "waiting")
    code["version"] = 2
    marked = celery_durable.start(deploys.order, 2)
    durable_wait_for_status(marked, "waiting")

    files = {}
    for name, run in (("old", old), ("marked", marked)):
        exported = cli("runs", "export", run.id)
        assert exported.exit_code == 0, exported.output
        body = json.loads(exported.output)
        assert body["format"] == "celery_durable.history/1" and body["run_id"] == run.id
        assert body["events"] == json.loads(json.dumps(run.events()))
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(exported.output)

    durable_replay(files["old"])  # version 2 replays both
    durable_replay(files["marked"])
    code["version"] = 3  # the old branch retired: the old history no longer replays
    durable_replay(files["marked"])
    with pytest.raises(pytest.fail.Exception, match="deprecated_patch"):
        durable_replay(files["old"])
    code["version"] = 4
    with pytest.raises(pytest.fail.Exception, match=r"recorded step 'ship'"):
        durable_replay(json.loads(files["old"].read_text()))  # a dict works too


def test_durable_replay_needs_no_redis(durable_replay, code, tmp_path: Path):
    """A history kept in the repository replays in a test with no Redis and no worker."""
    history = {
        "format": "celery_durable.history/1",
        "run_id": "kept",
        "workflow": "tests.deploys.order",
        "status": "waiting",
        "events": [
            _event(
                1, "workflow.started", {"name": "tests.deploys.order", "args": [9], "kwargs": {}}
            ),
            _event(2, "workflow.executing", {"worker": "w", "pid": 1, "attempt": 1}),
            _step(3, 0, "charge", "receipt-9"),
            _step(4, 1, "ship", "shipped-9"),
            _event(5, "event.waiting", {"position": 2, "name": "go", "timeout_at": None}),
        ],
    }
    durable_replay(history)
    code["version"] = 4
    with pytest.raises(pytest.fail.Exception, match="fraud_check"):
        durable_replay(history)


def test_a_bad_export_file_is_refused_naming_it(tmp_path: Path):
    path = tmp_path / "nope.json"
    path.write_text('{"events": []}')
    with pytest.raises(celery_durable.DurableError, match=r"nope\.json: not an exported history"):
        load_history(path)


def _event(seq: int, kind: str, data: dict) -> dict:
    return {"seq": seq, "type": kind, "ts": 1_700_000_000.0 + seq, "data": data}


def _step(seq: int, position: int, name: str, result: Any) -> dict:
    data = {"position": position, "name": name, "attempt": 1, "result": result}
    return _event(seq, "step.completed", {**data, "started_at": 0.0, "duration": 0.0})
