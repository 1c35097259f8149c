from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_durable.contrib.redis_server import RedisServer
from celery_durable.contrib.workers import WorkerProcesses
from celery_durable.extension import DurableExtension, extension_for
from tests.apps import client_side, faulty
from tests.worker_processes import WorkerProcesses as SuiteWorkers

FAULTY_APP = "tests.apps.faulty"


@pytest.fixture
def client_app(durable_redis_url: str) -> Iterator[Celery]:
    """The test process's side: the workers' app configuration, made current."""
    with client_side(faulty.make_app(durable_redis_url, main="faults-client")) as app:
        yield app


@pytest.fixture
def ext(client_app: Celery) -> DurableExtension:
    return extension_for(client_app)


@pytest.fixture
def durable_worker_processes_options(durable_worker_processes_options: dict[str, Any]) -> dict:
    return {**durable_worker_processes_options, "app": FAULTY_APP}


@pytest.fixture
def workers(durable_worker_processes: WorkerProcesses) -> WorkerProcesses:
    """Real workers of `tests.apps.faulty` on the test's Redis; all killed at teardown."""
    return durable_worker_processes


# -- a redis-server of the test's own, to stop, kill or fill ----------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with appendonly on (fsync every second), on a port and in a
    directory kept across restarts: `stop()`/`start()` it, or kill -9 its process."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(appendonly=True, directory=str(directory))
    server.extra_args = ["--appendfsync", "everysec"]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_client(private_redis: RedisServer) -> Iterator[Celery]:
    """The client side (the workers' configuration) on `private_redis`, made current."""
    with client_side(faulty.make_app(private_redis.url, main="faults-private-client")) as app:
        yield app


@pytest.fixture
def private_workers(private_redis: RedisServer, tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Real workers of `tests.apps.faulty` on `private_redis`; all killed at teardown."""
    started = SuiteWorkers(private_redis.url, tmp_path / "private-workers", app=FAULTY_APP)
    try:
        yield started
    finally:
        if started.workers:
            print(started.tails(), file=sys.stderr)
        started.close()
