"""The Celery app of `benchmarks/schedules.py`: a scheduled workflow, a Beat task.

Workers run `celery -A benchmarks.schedule_app worker`; the Beat side runs
`celery -A benchmarks.schedule_app beat -S benchmarks.schedule_app:StampingScheduler`
with `BEAT_ENTRIES_ENV` periodic entries of one second each. Both find their
Redis (broker and journal) in `REDIS_URL_ENV`.

Beat does not tell a task when it was due, so `StampingScheduler` adds it
(`due`, Unix seconds: the entry's previous run plus its interval, the moment
Beat's own `is_due` starts to answer yes) to each message's kwargs; the task
records `started - due` in a Redis list. That list push is the one thing
the Beat side does that the durable side does not (which reads its figures
from the journal afterwards): one round trip per task, about 0.1 ms.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

from celery import Celery
from celery.beat import Scheduler

import celery_durable
from celery_durable import workflow
from celery_durable.extension import extension_for

REDIS_URL_ENV = "CELERY_DURABLE_BENCH_REDIS_URL"
BEAT_ENTRIES_ENV = "CELERY_DURABLE_BENCH_BEAT_ENTRIES"
BEAT_LATENESS_KEY = "bench:beat:lateness"
WORKFLOW = "schedule_bench.tick"

app = Celery("schedule_bench")
app.conf.update(broker_connection_retry_on_startup=True, worker_prefetch_multiplier=4)
celery_durable.install(app)


def use_redis(url: str) -> None:
    """Point the broker and the journal at `url` (before first use)."""
    app.conf.update(broker_url=url, durable_redis_url=url)


use_redis(os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))

app.conf.beat_schedule = {
    f"beat-{i}": {"task": "schedule_bench.beat_tick", "schedule": 1.0, "args": (i,)}
    for i in range(int(os.environ.get(BEAT_ENTRIES_ENV) or 0))
}


@workflow(name=WORKFLOW)
def tick() -> None:
    """Does nothing: what is measured is getting it started on its tick."""


@app.task(name="schedule_bench.beat_tick", ignore_result=True)
def beat_tick(i: int, due: float | None = None) -> None:
    started = time.time()
    if due is not None:
        extension_for(app).redis.rpush(BEAT_LATENESS_KEY, f"{due!r} {started!r}")


class StampingScheduler(Scheduler):
    """Celery Beat's in-memory scheduler, adding each message's due time to its kwargs."""

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any):
        run_every = getattr(entry.schedule, "run_every", None)
        if run_every is not None and entry.last_run_at is not None:
            stamped = copy.copy(entry)
            stamped.kwargs = {**entry.kwargs, "due": (entry.last_run_at + run_every).timestamp()}
            entry = stamped
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
