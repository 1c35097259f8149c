from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_durable.contrib.workers import WorkerProcesses
from celery_durable.extension import DurableExtension, extension_for
from tests.apps import client_side, faulty

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
