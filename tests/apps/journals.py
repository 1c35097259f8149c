"""Apps that share one broker queue but not one journal, for `tests/test_shared_queue.py`.

`celery -A tests.apps.journals:alpha worker` and `...:beta worker` consume
the same default queue of one Redis broker with different
`durable_key_prefix`es; `...:elsewhere` keeps its journal in database 1 of
that Redis (its broker stays database 0). The test process makes its client
apps with `make_app()`; the workflow is registered by name, so importing this
module is enough for that.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse, urlunparse

from celery import Celery

import celery_durable
from celery_durable import get_context, step, workflow

from . import NOWHERE_URL, REDIS_URL_ENV

BROKER_URL = os.environ.get(REDIS_URL_ENV) or NOWHERE_URL


def in_database(url: str, db: int) -> str:
    """`url` pointing at database `db` of the same server."""
    return urlunparse(urlparse(url)._replace(path=f"/{db}"))


def make_app(
    broker_url: str, *, prefix: str = "durable", journal_url: str | None = None, main: str = ""
) -> Celery:
    """An app on `broker_url` (its default queue) whose journal is `prefix` on `journal_url`."""
    app = Celery(main or f"journals-{prefix}", broker=broker_url, set_as_current=False)
    app.conf.update(
        durable_redis_url=journal_url or broker_url,
        durable_key_prefix=prefix,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # Forwarding to another journal's queue must not need it configured.
        task_create_missing_queues=False,
    )
    celery_durable.install(app)
    return app


alpha = make_app(BROKER_URL, prefix="alpha")
beta = make_app(BROKER_URL, prefix="beta")
elsewhere = make_app(BROKER_URL, journal_url=in_database(BROKER_URL, 1), main="journals-db1")


@step(name="journals.double")
def double(n: int) -> int:
    return 2 * n


@workflow(name="journals.doubled")
def doubled(n: int) -> dict:
    return {"n": n, "doubled": double(n), "run_id": get_context().run_id}
