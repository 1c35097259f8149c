from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery, current_app

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
