"""The Celery app, tasks, steps and workflows that `benchmarks/fanout.py` measures.

Workers import it with `celery -A benchmarks.fanout_app worker`; it finds its
Redis (broker, result backend and journal alike) in the environment variable
named by `REDIS_URL_ENV`.

With `COUNT_ENV` set, every pool process counts the round trips its
celery_durable journal client makes while a task runs (one per command sent
alone, one per pipeline, a script being one command) and adds them, when
the task ends, to the hash `ROUNDTRIPS_KEY` (`trips`, and `flushes`: how
many HINCRBY pairs the counting itself sent, to take out of the server's
command count). Only the workers' tasks are counted: the timer poller and
the heartbeats of the main process, and the benchmark's own client, are not.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery
from celery.signals import task_postrun

import celery_durable
from celery_durable import step, workflow
from celery_durable.redis_client import JournalPipeline, JournalRedis

REDIS_URL_ENV = "CELERY_DURABLE_BENCH_REDIS_URL"
COUNT_ENV = "CELERY_DURABLE_BENCH_COUNT_ROUNDTRIPS"
ROUNDTRIPS_KEY = "bench:fanout:roundtrips"
SLEEP = 0.01

app = Celery("bench_fanout")
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_prefetch_multiplier = 1
celery_durable.install(app)


def use_redis(url: str) -> None:
    """Point the broker, the result backend and the journal at `url` (before first use)."""
    app.conf.update(broker_url=url, result_backend=url, durable_redis_url=url)


use_redis(os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))


# -- plain Celery ---------------------------------------------------------------------


@app.task(name="bench.fan.sleep")
def sleep_task(x: int) -> int:
    time.sleep(SLEEP)
    return x


@app.task(name="bench.fan.noop")
def noop_task(x: int) -> int:
    return x


@app.task(name="bench.fan.collect")
def collect(results: list[int]) -> int:
    return len(results)


# -- celery_durable -------------------------------------------------------------------


@step(name="bench.fan.sleep_step", queue="celery")
def sleep_step(x: int) -> int:
    time.sleep(SLEEP)
    return x


@step(name="bench.fan.noop_step", queue="celery")
def noop_step(x: int) -> int:
    return x


@workflow(name="bench.fan.sleep_map")
def sleep_map(n: int) -> int:
    return len(sleep_step.map(range(n)))


@workflow(name="bench.fan.noop_map")
def noop_map(n: int) -> int:
    return len(noop_step.map(range(n)))


# -- counting the journal's round trips in the workers ----------------------------------

_trips = [0]


def _count_roundtrips() -> None:
    execute_command = JournalRedis.execute_command
    execute = JournalPipeline.execute

    def counted_command(self, *args, **options):  # type: ignore[no-untyped-def]
        _trips[0] += 1
        return execute_command(self, *args, **options)

    def counted_execute(self, raise_on_error=True):  # type: ignore[no-untyped-def]
        if self.command_stack:
            _trips[0] += 1
        return execute(self, raise_on_error)

    JournalRedis.execute_command = counted_command  # type: ignore[method-assign]
    JournalPipeline.execute = counted_execute  # type: ignore[method-assign]
    reporter = redis.Redis.from_url(os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))

    @task_postrun.connect(weak=False)
    def report(**_: object) -> None:
        if _trips[0]:
            trips, _trips[0] = _trips[0], 0
            pipe = reporter.pipeline(transaction=False)
            pipe.hincrby(ROUNDTRIPS_KEY, "trips", trips)
            pipe.hincrby(ROUNDTRIPS_KEY, "flushes", 2)
            pipe.execute()


if os.environ.get(COUNT_ENV):
    _count_roundtrips()
