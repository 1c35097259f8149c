"""Sleeping runs on real `celery worker` processes: restarts and competing workers.

Workers are subprocesses (`tests.worker_processes`) running the app in
`tests.apps.sleepy`, whose step bodies count their executions per run in Redis.
The last one kills a worker during its warm shutdown, while a step still runs.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis as redis_lib

from celery_durable import RunHandle
from celery_durable.extension import extension_for
from tests.apps import sleepy
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def statuses(runs: list[RunHandle]) -> Counter[str]:
    return Counter(run.status() for run in runs)


def counts(client: redis_lib.Redis, step_name: str, runs: list[RunHandle]) -> list[int]:
    values = client.mget([sleepy.count_key(step_name, run.id) for run in runs])
    return [int(v or 0) for v in values]


def executions(run: RunHandle) -> list[dict]:
    return [e for e in run.events() if e["type"] == "workflow.executing"]


def results(runs: list[RunHandle], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    return [run.result(timeout=max(0.1, deadline - time.monotonic())) for run in runs]


def test_sleeping_runs_survive_a_restart_of_every_worker(
    client_app, durable_worker_processes, redis_client
):
    workers = durable_worker_processes
    first = workers.start_many(2, concurrency=2)
    runs = [sleepy.a_sleep_b.start(3.0) for _ in range(50)]
    wait_until(
        lambda: statuses(runs) == {"sleeping": 50},
        timeout=10,
        what=f"all 50 runs sleeping (they are {dict(statuses(runs))})",
    )
    assert counts(redis_client, "step_a", runs) == [1] * 50

    workers.stop_all(timeout=20)  # SIGTERM: warm shutdown
    assert workers.running() == []
    assert [w.returncode for w in first] == [0, 0]
    # Stopped before any sleep was due: nothing was resumed by the first workers.
    assert statuses(runs) == {"sleeping": 50}

    due = max(
        e["data"]["until"] for run in runs for e in run.events() if e["type"] == "sleep.started"
    )
    wait_until(lambda: time.time() > due, timeout=10, what="the sleeps to be due")
    assert statuses(runs) == {"sleeping": 50}  # no worker: due, but nobody woke them

    second = workers.start(concurrency=2)
    for run, result in zip(runs, results(runs, timeout=30), strict=True):
        assert result == {"run_id": run.id, "a": 1, "b": 1}
    assert counts(redis_client, "step_a", runs) == [1] * 50
    assert counts(redis_client, "step_b", runs) == [1] * 50
    for run in runs:
        first_execution, resumed = executions(run)
        assert first_execution["data"]["worker"] in {w.hostname for w in first}
        assert resumed["data"]["worker"] == second.hostname


def test_three_workers_execute_each_run_exactly_once(
    client_app, durable_worker_processes, redis_client
):
    workers = durable_worker_processes
    workers.start_many(3, concurrency=1)
    runs = [sleepy.nap_then_step.start(1.0) for _ in range(30)]
    for run, result in zip(runs, results(runs, timeout=30), strict=True):
        assert result == {"run_id": run.id, "after_nap": 1}
    assert counts(redis_client, "after_nap", runs) == [1] * 30
    for run in runs:
        types = [e["type"] for e in run.events()]
        assert types.count("workflow.executing") == 2, (run.id, types)  # first, one resume
        assert types.count("workflow.suspended") == 1, (run.id, types)
        assert types[-1] == "workflow.completed"
    # Every due timer was claimed, dispatched and dropped.
    timers = extension_for(client_app).keys.timers()
    wait_until(lambda: redis_client.zcard(timers) == 0, timeout=5, what="no timers left")


def test_a_worker_killed_during_its_warm_shutdown_has_its_runs_taken_over(
    client_app, durable_worker_processes, redis_client
):
    ext = extension_for(client_app)
    workers = durable_worker_processes
    first = workers.start(concurrency=1)
    run = sleepy.a_gate_b.start(60.0)
    wait_until(lambda: counts(redis_client, "gate", [run]) == [1], timeout=10, what="the gate step")
    first.terminate()  # warm shutdown: it waits for the gate step...
    first.wait_for_log("Warm shutdown", timeout=10)
    # Still draining: it must not sign off yet, or nobody would recover it.
    assert redis_client.zscore(ext.keys.workers(), first.hostname) is not None
    first.kill(children=True)  # ...but its grace period runs out (systemd, Kubernetes)
    assert run.status() == "running"

    redis_client.rpush(sleepy.gate_key(run.id), "open")
    workers.start(concurrency=1)
    settings = ext.settings
    patience = settings.worker_timeout + 2 * settings.heartbeat_interval + 5
    assert run.result(timeout=patience) == {"run_id": run.id, "a": 1, "gate": 2, "b": 1}
