from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery, current_app

from celery_durable.contrib.redis_server import RedisServer
from celery_durable.extension import DurableExtension, extension_for
from tests.apps import faulty
from tests.worker_processes import WorkerProcesses

FAULTY_APP = "tests.apps.faulty"


@pytest.fixture
def client_app(durable_redis_url: str) -> Iterator[Celery]:
    """The test process's side: the workers' app configuration, made current."""
    previous = current_app._get_current_object()
    app = faulty.make_app(durable_redis_url, main="faults-client")
    app.set_current()
    yield app
    extension_for(app).redis.close()
    app.close()
    previous.set_current()


@pytest.fixture
def ext(client_app: Celery) -> DurableExtension:
    return extension_for(client_app)


@pytest.fixture
def workers(durable_redis_url: str, tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Real workers of `tests.apps.faulty` on the test's Redis; all killed at teardown."""
    started = WorkerProcesses(durable_redis_url, tmp_path / "workers", app=FAULTY_APP)
    try:
        yield started
    finally:
        if started.workers:
            print(started.tails(), file=sys.stderr)
        started.close()


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
    previous = current_app._get_current_object()
    app = faulty.make_app(private_redis.url, main="faults-private-client")
    app.set_current()
    yield app
    extension_for(app).redis.close()
    app.close()
    previous.set_current()


@pytest.fixture
def private_workers(private_redis: RedisServer, tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Real workers of `tests.apps.faulty` on `private_redis`; all killed at teardown."""
    started = WorkerProcesses(private_redis.url, tmp_path / "workers", app=FAULTY_APP)
    try:
        yield started
    finally:
        if started.workers:
            print(started.tails(), file=sys.stderr)
        started.close()
