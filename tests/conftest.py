from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery
from celery.bin.celery import celery as celery_main
from click.testing import CliRunner

from celery_durable.contrib.workers import WorkerProcesses
from celery_durable.extension import DurableExtension, extension_for
from tests.apps import client_side
from tests.worker_processes import SUITE_OPTIONS

pytest_plugins = ["tests.http_receiver"]


@pytest.fixture
def worker_app(request: pytest.FixtureRequest) -> str:
    """The app module of the workers a test starts: `WORKER_APP` of its module,
    else `tests.apps.sleepy`."""
    return getattr(request.module, "WORKER_APP", SUITE_OPTIONS["app"])


@pytest.fixture
def durable_worker_processes_options(worker_app: str) -> dict[str, Any]:
    return {**SUITE_OPTIONS, "app": worker_app}


@pytest.fixture
def client_app(worker_app: str, durable_redis_url: str) -> Iterator[Celery]:
    """The test process's side: the workers' app configuration (its module's
    `make_app`) on the test's Redis, made current."""
    module = importlib.import_module(worker_app)
    with client_side(module.make_app(durable_redis_url, main=f"{worker_app}.client")) as app:
        yield app


@pytest.fixture
def ext(client_app: Celery) -> DurableExtension:
    return extension_for(client_app)


@pytest.fixture
def workers(durable_worker_processes: WorkerProcesses) -> WorkerProcesses:
    """Real workers of that app on the test's Redis; all killed at teardown."""
    return durable_worker_processes


@pytest.fixture
def cli_app(durable_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app module `-A` names (tests/apps/cli_app.py), on this session's Redis."""
    monkeypatch.setenv("DURABLE_CLI_TEST_REDIS_URL", durable_redis_url)
    from tests.apps import cli_app as module

    assert durable_redis_url == module.URL, "the CLI app was imported with another Redis"
    module.app.set_current()
    yield module.app


@pytest.fixture
def cli(durable_app: Celery, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """`celery durable ...` in this process, on the test's app (so on its Redis)."""
    import tests.apps as apps_package

    monkeypatch.setattr(apps_package, "current_test_app", durable_app, raising=False)

    def run(*args: str) -> Any:
        return CliRunner().invoke(
            celery_main,
            ["-A", "tests.apps:current_test_app", "durable", *args],
            catch_exceptions=False,
        )

    return run


@pytest.fixture
def code() -> Iterator[dict]:
    """The code "deployed" in this process (`tests.apps.deploys`): a test sets
    its version; it is back to 1 after."""
    from tests.apps import deploys

    deploys.CODE["version"] = 1
    yield deploys.CODE
    deploys.CODE["version"] = 1


@pytest.fixture
def redis_client(durable_redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(durable_redis_url)
    yield client
    client.close()


@pytest.fixture
def counter(redis_client: redis_lib.Redis) -> Callable[[str], int]:
    """Read how often a test step ran (steps INCR `test:count:<name>`)."""

    def read(name: str) -> int:
        return int(redis_client.get(f"test:count:{name}") or 0)

    return read


@pytest.fixture
def processed() -> Iterator[Callable[..., None]]:
    """Wait until the in-process worker has finished a task with these args."""
    import time

    from celery.signals import task_postrun

    seen: list[list] = []

    def record(sender=None, args=None, **kwargs) -> None:
        seen.append(list(args or ()))

    task_postrun.connect(record, weak=False)

    def wait(*args: object, times: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while seen.count(list(args)) < times:
            assert time.monotonic() < deadline, f"no task with args {args} finished in time"
            time.sleep(0.02)

    yield wait
    task_postrun.disconnect(record)
