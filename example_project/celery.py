"""The Celery app: one Redis for the broker and the journal, durable installed.

The Redis URL comes from the environment (`DURABLE_REDIS_URL`, else
`REDIS_URL`), so that the worker and every process that starts runs agree on
it without a config file.
"""

from __future__ import annotations

import os

from celery import Celery

import celery_durable

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def redis_url_from_env() -> str:
    """`DURABLE_REDIS_URL`, else `REDIS_URL`, else a local Redis."""
    return os.environ.get("DURABLE_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


app = Celery("example_project", include=["example_project.workflows"])
app.conf.update(
    # A workflow task holds its pool slot while its steps run inline: prefetch
    # one message at a time so a busy child does not sit on runs another could take.
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
celery_durable.install(app)


def use_redis(url: str) -> None:
    """Point the broker and the journal at `url`; call before the app is used.

    A process that decides its Redis after importing the app (the demo, which
    may start a private redis-server) calls this; the worker never needs to.
    """
    app.conf.update(broker_url=url, durable_redis_url=url)


use_redis(redis_url_from_env())
