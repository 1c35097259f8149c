"""The Celery app, tasks and workflows of the timer benchmarks.

`benchmarks/sleep_overshoot.py` and `benchmarks/suspended_population.py`
start `celery -A benchmarks.timer_app worker`; the worker finds its Redis
(broker, result backend and journal alike) in the environment variable named
by `REDIS_URL_ENV`. The app keeps celery_durable's default settings (timer
poll interval 0.2 s) unless `POLL_INTERVAL_ENV` says otherwise.
"""

from __future__ import annotations

import datetime as dt
import os
import time

from celery import Celery, Task

import celery_durable
from celery_durable import sleep, step, workflow

REDIS_URL_ENV = "CELERY_DURABLE_BENCH_REDIS_URL"
# Unset (the default): celery_durable's own durable_timer_poll_interval (0.2 s).
POLL_INTERVAL_ENV = "CELERY_DURABLE_BENCH_POLL_INTERVAL"

app = Celery("timer_bench")
app.conf.broker_connection_retry_on_startup = True
celery_durable.install(app)


def use_redis(url: str) -> None:
    """Point the broker, the result backend and the journal at `url` (before first use)."""
    app.conf.update(broker_url=url, result_backend=url, durable_redis_url=url)


use_redis(os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))
if os.environ.get(POLL_INTERVAL_ENV):
    app.conf.durable_timer_poll_interval = float(os.environ[POLL_INTERVAL_ENV])


# -- plain Celery ----------------------------------------------------------------


@app.task(name="timer_bench.delayed", bind=True)
def delayed(task: Task, i: int) -> dict[str, float | int | None]:
    """Sent with a countdown: when it started, and the eta it was due at."""
    started = time.time()
    eta = task.request.eta
    if isinstance(eta, str):
        eta = dt.datetime.fromisoformat(eta)
    return {"i": i, "started": started, "eta": eta.timestamp() if eta is not None else None}


@app.task(name="timer_bench.noop")
def noop(x: int) -> int:
    return x + 1


# -- celery_durable ------------------------------------------------------------------


@step
def stamp(i: int) -> int:
    return i


@workflow(name="timer_bench.sleeper")
def sleeper(i: int, seconds: float) -> int:
    """Sleep durably for `seconds`, then run one step."""
    sleep(seconds)
    return stamp(i)
