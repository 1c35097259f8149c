"""pytest fixtures for testing celery_durable workflows against real parts.

Registered through the `pytest11` entry point. Every fixture is named
`durable_*`, so this plugin loads next to `celery.contrib.pytest` and
pytest-celery without a clash.

- `durable_redis_url`: an empty Redis database. A private redis-server is
  started once per session on a free port, unless `DURABLE_TEST_REDIS_URL`
  names one (whose database is then flushed before each test).
- `durable_app_config`: override to add settings to `durable_app`.
- `durable_app`: a Celery app on that Redis with celery_durable installed.
- `durable_worker`: an in-process worker (`celery.contrib.testing`) for it.
- `durable_wait_for_status`: wait, with a deadline, until a run has a status.
- `durable_time_skip`: fast-forward durable time (sleeps, event timeouts,
  max_duration, schedules' ticks) for the app's in-process worker, without
  waiting.
- `durable_worker_processes`: real `celery worker` subprocesses on that
  Redis (`celery_durable.contrib.workers.WorkerProcesses`), all killed at
  teardown; `durable_worker_processes_options` (override it) says which app
  they run and how.
- `durable_replay`: replay a history exported by `celery durable runs
  export` against the code importable now; the test fails with the
  divergence. Needs no Redis and no worker.
- `durable_http_receiver`: a real HTTP server on 127.0.0.1 that records
  the requests rules send it (`celery_durable.contrib.http_receiver`).
- `durable_rule_parts`: the triggers, conditions and actions of every
  installed plugin, as a worker loads them: `load_rules(specs,
  durable_rule_parts)` checks rules (a plugin's own tests).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from ..extension import DurableExtension, extension_for
from ..install import install
from ..options import parse_duration
from ..plugins import make_plugin_manager
from ..rules.registry import PartRegistry
from ..workflows.replay import load_history, replay_history
from ..workflows.runs import RunHandle
from .http_receiver import HttpReceiver
from .redis_server import RedisServer
from .workers import WorkerProcesses


@pytest.fixture(scope="session")
def durable_redis_server_url() -> Iterator[str]:
    url = os.environ.get("DURABLE_TEST_REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def durable_redis_url(durable_redis_server_url: str) -> str:
    client = redis.Redis.from_url(durable_redis_server_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return durable_redis_server_url


@pytest.fixture
def durable_app_config() -> dict[str, Any]:
    return {}


@pytest.fixture
def durable_app(durable_redis_url: str, durable_app_config: dict[str, Any]) -> Iterator[Celery]:
    app = Celery("durable-tests", broker=durable_redis_url, set_as_current=True)
    app.conf.update(
        durable_redis_url=durable_redis_url,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        **durable_app_config,
    )
    extension = install(app)
    app.set_current()
    yield app
    extension.redis.close()
    app.close()


@pytest.fixture
def durable_worker(durable_app: Celery) -> Iterator[Any]:
    with start_worker(
        durable_app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=30
    ) as worker:
        yield worker


def wait_for_status(run: RunHandle, *statuses: str, timeout: float = 10.0) -> str:
    """Poll until the run has one of `statuses`; fail the test past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        status = run.status()
        if status in statuses:
            return status
        if time.monotonic() > deadline:
            pytest.fail(
                f"run {run.id} is {status!r}, not {' or '.join(statuses)}, after {timeout}s"
            )
        time.sleep(0.02)


@pytest.fixture
def durable_wait_for_status() -> Callable[..., str]:
    return wait_for_status


class TimeSkip:
    """Moves the durable clock of one app forward; its worker's poller follows."""

    def __init__(self, ext: DurableExtension):
        self.ext = ext

    def advance(self, duration: float | str | None = None) -> float:
        """Move forward by `duration`, or to the next due timer (a schedule's next
        tick too); return the seconds."""
        if duration is None:
            due = self.ext.timers.next_due()
            seconds = 0.0 if due is None else max(0.0, due - self.ext.clock.now())
        else:
            seconds = parse_duration(duration, field="advance(duration)") or 0.0
        self.ext.clock.advance(seconds)
        return seconds


@pytest.fixture
def durable_time_skip(durable_app: Celery) -> TimeSkip:
    return TimeSkip(extension_for(durable_app))


@pytest.fixture
def durable_worker_processes_options() -> dict[str, Any]:
    """Keyword arguments of `WorkerProcesses` for `durable_worker_processes`: override it.

    At least the app to run, as `celery -A` names it: ``{"app": "myproject.celery"}``;
    ``"url_env"`` names the environment variable from which that app reads its
    Redis URL (set to the test's); ``"broker_url"`` replaces `durable_redis_url`.
    """
    return {}


@pytest.fixture
def durable_worker_processes(
    durable_redis_url: str, durable_worker_processes_options: dict[str, Any], tmp_path: Path
) -> Iterator[WorkerProcesses]:
    """Start real workers on the test's Redis; all are killed at teardown.

    Their logs are under `tmp_path / "workers"` and their tails are printed at
    teardown (pytest shows them when the test failed).
    """
    options = dict(durable_worker_processes_options)
    broker_url = options.pop("broker_url", durable_redis_url)
    with tails_printed(WorkerProcesses(broker_url, tmp_path / "workers", **options)) as workers:
        yield workers


@contextlib.contextmanager
def tails_printed(workers: WorkerProcesses) -> Iterator[WorkerProcesses]:
    """`workers` for a fixture of one's own to yield: at teardown the tails of
    their logs are printed (pytest shows them when the test failed) and every
    process is killed."""
    try:
        yield workers
    finally:
        if workers.workers:
            print(workers.tails(), file=sys.stderr)
        workers.close()


class Replayer:
    """`durable_replay(path)`: fail the test if the exported history diverges from the code."""

    def __init__(self, ext: DurableExtension):
        self.ext = ext

    def __call__(self, history: str | Path | dict[str, Any]) -> None:
        run_id, status, events = load_history(history)
        divergence = replay_history(self.ext, run_id, events, status=status)
        if divergence is not None:
            pytest.fail(f"the history of run {run_id} diverges: {divergence.message}")


@pytest.fixture
def durable_replay() -> Iterator[Replayer]:
    """Replay exported histories dry: no step body runs, nothing connects to Redis."""
    app = Celery("durable-replay", broker="memory://", set_as_current=False)
    # Never connected to: a dry replay reads and writes nothing.
    app.conf.durable_redis_url = "redis://127.0.0.1:9/0"
    yield Replayer(install(app))
    app.close()


@pytest.fixture(scope="session")
def durable_rule_parts() -> PartRegistry:
    """Every installed plugin's triggers, conditions and actions, by name."""
    return PartRegistry.collect(make_plugin_manager())


@pytest.fixture
def durable_http_receiver() -> Iterator[HttpReceiver]:
    """A local HTTP server for a rule's webhook or Slack URL (`durable_http_receiver.url`)."""
    with HttpReceiver() as receiver:
        yield receiver
