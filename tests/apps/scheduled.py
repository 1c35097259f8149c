"""A Celery app for the schedule tests: `celery -A tests.apps.scheduled worker`.

Its workflows carry no `schedule=`, so the test process may import them
(it defines schedules with `schedule()`). With `DECORATED_ENV` set, a worker
also imports `tests.apps.scheduled_decorated` (Celery's `imports` setting),
whose workflow has `@workflow(schedule="1s")`: only the workers of the test
that wants it ever load it, so no other test's worker registers it.

`durable_schedule_grace` is 1 s here (60 s by default), so that
`catch_up="none"` is seen within a short test.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_durable import get_context, sleep, workflow

from . import NOWHERE_URL, REDIS_URL_ENV, make_worker_app

DECORATED_ENV = "DURABLE_TEST_SCHEDULED_DECORATED"
GRACE = 1.0


def make_app(redis_url: str, main: str = "tests.apps.scheduled") -> Celery:
    """The workers' app on `redis_url` (the test process makes a client of it)."""
    imports = ["tests.apps.scheduled_decorated"] if os.environ.get(DECORATED_ENV) else []
    return make_worker_app(main, redis_url, durable_schedule_grace=GRACE, imports=imports)


app = make_app(os.environ.get(REDIS_URL_ENV) or NOWHERE_URL)


def tick_report() -> dict:
    ctx = get_context()
    return {"run_id": ctx.run_id, "schedule": ctx.schedule, "scheduled_at": ctx.scheduled_at}


@workflow(name="scheduled.stamp")
def stamp() -> dict:
    """What the run knows of its tick."""
    return tick_report()


@workflow(name="scheduled.napper")
def napper(seconds: float) -> dict:
    """A durable sleep of `seconds`: unfinished for that long, holding no worker."""
    sleep(seconds)
    return tick_report()
