"""redis-server restarts under running workers (broker and journal alike).

The test starts its own redis-server with appendonly on, on a fixed port and
directory, stops it with SIGTERM (the AOF is flushed) in the middle of the
runs and starts a new one at the same address. The workers are not
restarted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery

from celery_durable.codec import unpackb
from celery_durable.contrib.redis_server import RedisServer
from celery_durable.contrib.workers import WorkerProcesses
from celery_durable.extension import extension_for
from tests.apps import client_side, faulty
from tests.faults import check_steps_once, executions, results, statuses, wait_until

pytestmark = pytest.mark.slow

RUNS = 50
STEPS = 10
DELAY = 0.05
DOWN = 0.5  # seconds without a Redis between the old server and the new one


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(appendonly=True, directory=str(directory))  # a free port, kept
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_client(own_redis: RedisServer) -> Iterator[Celery]:
    with client_side(faulty.make_app(own_redis.url, main="faults-restart-client")) as app:
        yield app


@pytest.fixture
def durable_worker_processes_options(
    durable_worker_processes_options: dict[str, Any], own_redis: RedisServer
) -> dict[str, Any]:
    return {**durable_worker_processes_options, "broker_url": own_redis.url}


@pytest.fixture
def own_workers(durable_worker_processes: WorkerProcesses) -> WorkerProcesses:
    """Workers of `tests.apps.faulty` on the test's own redis-server."""
    return durable_worker_processes


def test_workers_carry_on_after_redis_restarts(own_redis, own_client, own_workers):
    ext = extension_for(own_client)
    pair = own_workers.start_many(2, concurrency=2)
    runs = [faulty.steps.start(STEPS, DELAY) for _ in range(RUNS)]
    wait_until(
        lambda: statuses(ext, runs).get("completed", 0) >= RUNS // 5,
        timeout=30,
        what=lambda: f"a fifth of the runs done ({statuses(ext, runs)})",
    )
    own_redis.stop()  # SIGTERM: redis-server flushes the AOF and exits
    stopped_at = time.time()
    time.sleep(DOWN)
    own_redis.start()
    back_at = time.time()

    for run, result in zip(runs, results(runs, timeout=90), strict=True):
        assert len(result) == STEPS, (run.id, result)
    assert all(w.is_alive() for w in pair)  # never restarted

    client = redis_lib.Redis.from_url(own_redis.url)
    try:
        for run in runs:
            events = run.events()
            claims = executions(events)
            # A run caught by the restart may have been taken over by a worker
            # that thought the other one dead; its first execution was then
            # fenced out at its next write.
            assert 1 <= len(claims) <= 2, (run.id, claims)
            check_steps_once(
                events,
                faulty.step_counts(client, run.id, STEPS),
                may_repeat_after=claims[-1]["seq"] if len(claims) == 2 else None,
            )
            if len(claims) == 2:
                assert "takeover" in claims[1]["data"], claims
                assert claims[1]["ts"] >= stopped_at
    finally:
        client.close()
    # The restart did happen while runs were under way, and steps that were
    # running then had their results recorded once Redis was back (the stream
    # entry's id is the server's time of the write; an event's `ts` is the
    # writer's time before its first try).
    ends = [run.events()[-1]["ts"] for run in runs]
    assert min(ends) < stopped_at < back_at < max(ends)
    straddling = [
        (run.id, entry_id)
        for run in runs
        for entry_id, fields in ext.redis.xrange(ext.keys.run_events(run.id))
        if (event := unpackb(fields[b"e"]))["type"] == "step.completed"
        and event["data"]["started_at"] < stopped_at
        and int(entry_id.split(b"-")[0]) > back_at * 1000
    ]
    assert straddling, "no step was running when Redis stopped"
