from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib

from tests.worker_processes import SUITE_OPTIONS

pytest_plugins = ["tests.http_receiver"]


@pytest.fixture
def durable_worker_processes_options() -> dict[str, Any]:
    """`durable_worker_processes` runs `tests.apps.sleepy` unless a test module says otherwise."""
    return dict(SUITE_OPTIONS)


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
