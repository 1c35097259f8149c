from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from celery_durable.contrib.pytest import tails_printed
from celery_durable.contrib.redis_server import RedisServer
from celery_durable.contrib.workers import WorkerProcesses
from tests.apps import client_side, faulty
from tests.worker_processes import WorkerProcesses as SuiteWorkers

FAULTY_APP = "tests.apps.faulty"


@pytest.fixture
def worker_app() -> str:
    return FAULTY_APP


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
    workers = SuiteWorkers(private_redis.url, tmp_path / "private-workers", app=FAULTY_APP)
    with tails_printed(workers) as started:
        yield started
