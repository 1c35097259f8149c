"""The suite's real `celery worker` subprocesses: `celery_durable.contrib.workers`,
with the suite's defaults (the app `tests.apps.sleepy`, run from the
repository root, its Redis given in `tests.apps.REDIS_URL_ENV`).

The `durable_worker_processes` fixture comes from celery_durable's pytest
plugin; `tests/conftest.py` gives it these defaults (`SUITE_OPTIONS`):

    def test_x(durable_worker_processes):
        w1, w2 = durable_worker_processes.start_many(2, concurrency=1)
        ...
        w1.kill()                      # kill -9 of the main process
        w2.kill_pool_child()           # kill -9 of one pool child
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery_durable.contrib import workers as _contrib
from celery_durable.contrib.workers import (
    READY_LINE,
    WorkerProcessError,
    children_of,
    group_members,
)
from tests.apps import REDIS_URL_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_APP = "tests.apps.sleepy"
SUITE_OPTIONS: dict[str, Any] = {"app": DEFAULT_APP, "url_env": REDIS_URL_ENV, "cwd": REPO_ROOT}

__all__ = [
    "DEFAULT_APP",
    "READY_LINE",
    "REPO_ROOT",
    "SUITE_OPTIONS",
    "WorkerProcess",
    "WorkerProcessError",
    "WorkerProcesses",
    "children_of",
    "group_members",
]


class WorkerProcess(_contrib.WorkerProcess):
    """One worker of a suite app (`SUITE_OPTIONS`, then `options`) on `redis_url`."""

    def __init__(self, redis_url: str, log_path: Path, **options: Any):
        super().__init__(redis_url, log_path, **{**SUITE_OPTIONS, **options})


class WorkerProcesses(_contrib.WorkerProcesses):
    """Workers of a suite app (`SUITE_OPTIONS`, then `options`) on `redis_url`."""

    def __init__(self, redis_url: str, log_dir: Path, **options: Any):
        super().__init__(redis_url, log_dir, **{**SUITE_OPTIONS, **options})
