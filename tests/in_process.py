"""In-process workers (celery.contrib.testing) as the rules tests start them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker


@contextlib.contextmanager
def solo_worker(app: Celery, queues: list[str]) -> Iterator[Any]:
    """A solo-pool worker in this process consuming `queues`; stopped on exit
    (a task still running is given 30 s)."""
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=queues, shutdown_timeout=30
    ) as worker:
        yield worker
