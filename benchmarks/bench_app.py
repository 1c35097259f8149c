"""The Celery app, tasks and workflow that `benchmarks/throughput.py` measures.

The worker imports this module with `celery -A benchmarks.bench_app worker`;
it finds its Redis (broker, result backend and journal alike) in the
environment variable named by `REDIS_URL_ENV`.
"""

from __future__ import annotations

import os

from celery import Celery

import celery_durable
from celery_durable import step, workflow

REDIS_URL_ENV = "CELERY_DURABLE_BENCH_REDIS_URL"
STEPS = 10

app = Celery("bench")
app.conf.broker_connection_retry_on_startup = True
celery_durable.install(app)


def use_redis(url: str) -> None:
    """Point the broker, the result backend and the journal at `url`.

    Call before the app is first used: Celery and celery_durable read these
    settings lazily, once.
    """
    app.conf.update(broker_url=url, result_backend=url, durable_redis_url=url)


use_redis(os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))


# -- plain Celery ----------------------------------------------------------------


@app.task(name="bench.noop")
def noop(x: int) -> int:
    return x + 1


# -- celery_durable ------------------------------------------------------------------


@step
def inc(x: int) -> int:
    return x + 1


@workflow(name="bench.ten_steps")
def ten_steps(x: int) -> int:
    for _ in range(STEPS):
        x = inc(x)
    return x
