from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis as redis_lib


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
