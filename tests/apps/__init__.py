"""Celery app modules that real `celery worker` subprocesses load in the slow tests.

Each app reads its Redis (broker and journal) from `REDIS_URL_ENV`, which
`tests.worker_processes` sets for every worker it starts. The test process
builds a client app of the same configuration with the module's `make_app`
and makes it current with `client_side`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from celery import Celery, current_app

import celery_durable
from celery_durable import get_context
from celery_durable.extension import extension_for

REDIS_URL_ENV = "DURABLE_TEST_REDIS_URL_FOR_WORKERS"

# Where an app points when `REDIS_URL_ENV` is not set (a module imported by the
# test process only for its workflow definitions): a closed port, so that it
# can never reach a real Redis (such as a system one on 6379) by accident.
NOWHERE_URL = "redis://127.0.0.1:1/0"


def make_worker_app(main: str, redis_url: str, **conf: Any) -> Celery:
    """A Celery app on `redis_url` (broker and journal) with celery_durable installed."""
    # Not made current on import: the test process makes its client app current
    # itself, and a worker makes the app it loads current anyway.
    app = Celery(main, broker=redis_url, set_as_current=False)
    app.conf.update(
        durable_redis_url=redis_url,
        # A run's task holds its pool slot while its steps run inline: take one
        # message at a time, so a busy child does not sit on runs another could
        # take, and a killed worker held exactly the runs it was executing.
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        **conf,
    )
    celery_durable.install(app)
    return app


# Detection is quick in the apps of the tests that kill workers or lose messages.
HEARTBEAT_INTERVAL = 0.5
WORKER_TIMEOUT = 3.0


def make_quick_app(main: str, redis_url: str, *, redispatch_after: float, **conf: Any) -> Celery:
    """`make_worker_app` that notices a dead worker within seconds and sends a
    lost run message again after `redispatch_after` seconds."""
    return make_worker_app(
        main,
        redis_url,
        durable_heartbeat_interval=HEARTBEAT_INTERVAL,
        durable_worker_timeout=WORKER_TIMEOUT,
        durable_redispatch_after=redispatch_after,
        # Redis out of memory refuses kombu's acks (a ResponseError, a "channel
        # error"): retry the consumer instead of letting the worker exit, as
        # the README advises when broker and journal share a Redis.
        broker_channel_error_retry=True,
        **conf,
    )


@contextlib.contextmanager
def client_side(app: Celery) -> Iterator[Celery]:
    """The test process's side of the workers' app: `app` made current, closed after."""
    previous = current_app._get_current_object()
    app.set_current()
    try:
        yield app
    finally:
        extension_for(app).redis.close()
        app.close()
        previous.set_current()


def gate_key(run_id: str) -> str:
    """The list that opens a run's gate step: RPUSH anything onto it."""
    return f"test:gate:{run_id}"


def wait_at_gate(timeout: float) -> None:
    """Block the running step until the test opens its run's gate (see `gate_key`)."""
    run_id = get_context().run_id
    if extension_for().redis.blpop([gate_key(run_id)], timeout=timeout) is None:
        raise TimeoutError(f"the gate of run {run_id} was not opened within {timeout}s")
