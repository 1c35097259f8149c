"""The Celery app that `benchmarks/retention.py` measures: three-step runs.

The worker finds its Redis (broker, result backend and journal alike) in
`REDIS_URL_ENV`, and `durable_retention` in `RETENTION_ENV` (seconds, or
`none` to keep finished runs forever).
"""

from __future__ import annotations

import os

from celery import Celery

import celery_durable
from celery_durable import step, workflow

REDIS_URL_ENV = "CELERY_DURABLE_BENCH_REDIS_URL"
RETENTION_ENV = "CELERY_DURABLE_BENCH_RETENTION"

app = Celery("retention_bench")
app.conf.broker_connection_retry_on_startup = True
celery_durable.install(app)


def configure(url: str, retention: str | None) -> None:
    """Point everything at `url` and set the retention (before first use)."""
    app.conf.update(broker_url=url, result_backend=url, durable_redis_url=url)
    if retention is not None:
        app.conf.durable_retention = None if retention == "none" else float(retention)


configure(os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"), os.environ.get(RETENTION_ENV))


@app.task(name="retention_bench.ping")
def ping() -> str:
    """Answered once a pool process is up: the worker is ready."""
    return "pong"


@step
def add(a: int, b: int) -> int:
    return a + b


@step
def double(x: int) -> int:
    return x * 2


@step
def label(x: int) -> str:
    return f"total {x}"


@workflow(name="retention_bench.three_steps")
def three_steps(n: int) -> dict:
    total = add(n, 1)
    return {"total": total, "doubled": double(total), "label": label(total)}
