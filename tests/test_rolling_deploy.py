"""A rolling deploy with real workers: runs in flight finish, each on one consistent path.

An old worker (code version 1) runs; runs start, some wait past the patch
point, some sleep before it. A new worker (version 2: the change behind
`patched("fraud-check")`) starts beside it; more runs start and land on
either. Events are sent while both run: a run whose history the new code
wrote, replayed by the old worker, is blocked (not failed) and tried again.
The old worker is stopped. Every run completes; a run took the new path
exactly when its history has the patch marker; every step body ran once.
"""

from __future__ import annotations

import pytest
from celery import Celery

import celery_durable
from celery_durable.contrib.workers import WorkerProcesses
from celery_durable.extension import extension_for
from tests.apps import deploys
from tests.faults import wait_until

pytestmark = pytest.mark.slow
WORKER_APP = "tests.apps.deploys_app"  # for durable_worker_processes and client_app

OLD, NEW = {"DURABLE_TEST_CODE_VERSION": "1"}, {"DURABLE_TEST_CODE_VERSION": "2"}


def _status(runs: list, *statuses: str, what: str) -> None:
    wait_until(lambda: all(r.status() in statuses for r in runs), timeout=30, what=what)


def test_runs_started_on_old_code_finish_under_new_code_with_patched(
    client_app: Celery, durable_worker_processes: WorkerProcesses
):
    workers = durable_worker_processes
    old_worker = workers.start(concurrency=1, env=OLD)
    past = [celery_durable.start(deploys.order, n, app=client_app) for n in range(3)]
    sleeping = [celery_durable.start(deploys.napper, n, app=client_app) for n in range(10, 12)]
    _status(past, "waiting", what="the old runs waiting past the patch point")

    workers.start(concurrency=1, env=NEW)  # the deploy begins: old and new side by side
    during = [celery_durable.start(deploys.order, n, app=client_app) for n in range(20, 24)]
    _status(during, "waiting", what="the runs started during the deploy waiting")
    for run in during[:2]:  # woken while both run: either worker may replay them
        celery_durable.send_event(run.id, "go", app=client_app)
    old_worker.stop()  # the deploy ends
    assert not old_worker.is_running()
    for run in past + during[2:]:
        celery_durable.send_event(run.id, "go", app=client_app)

    everything = past + sleeping + during
    results = {run.id: run.result(timeout=45) for run in everything}
    for run in everything:
        marked = any(e["type"] == "patch.marked" for e in run.events())
        assert results[run.id]["checked"] is marked, (run.id, run.events())
    assert not any(results[r.id]["checked"] for r in past)  # past the point under old code
    assert all(results[r.id]["version"] == 2 for r in past + sleeping)  # finished by the new one
    assert any(results[r.id]["checked"] for r in sleeping + during)  # the new path was taken

    redis = extension_for(client_app).redis
    counts = {name: int(redis.get(f"test:count:{name}") or 0) for name in ("charge", "ship")}
    assert counts == {"charge": len(everything), "ship": len(everything)}  # each body once
    checked = sum(bool(results[r.id]["checked"]) for r in everything)
    assert int(redis.get("test:count:fraud_check") or 0) == checked


def test_a_new_history_met_by_an_old_worker_is_blocked_then_finished_by_a_new_one(
    client_app: Celery, durable_worker_processes: WorkerProcesses
):
    """A rollback, or a run woken on a worker not yet updated: blocked, never failed."""
    workers = durable_worker_processes
    new_worker = workers.start(concurrency=1, env=NEW)
    run = celery_durable.start(deploys.order, 5, app=client_app)
    _status([run], "waiting", what="the run waiting under the new code")
    new_worker.stop()
    old_worker = workers.start(concurrency=1, env=OLD)
    celery_durable.send_event(run.id, "go", app=client_app)
    _status([run], "blocked", what="the run blocked by the old worker")
    blocked = [e for e in run.events() if e["type"] == "workflow.blocked"]
    assert "recorded step 'fraud_check'" in blocked[0]["data"]["error"]["message"]

    workers.start(concurrency=1, env=NEW)  # the new code comes back beside the old
    old_worker.stop()
    assert run.result(timeout=30) == {"shipped": "shipped-5", "checked": True, "version": 2}
    types = [e["type"] for e in run.events()]
    assert types.count("workflow.blocked") == 1  # tries that still diverged wrote nothing
    redis = extension_for(client_app).redis
    assert int(redis.get("test:count:ship") or 0) == 1
