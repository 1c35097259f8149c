"""A workflow with `@workflow(schedule="1s")`, imported only by workers of
`tests.apps.scheduled` started with `DECORATED_ENV` (see that module)."""

from __future__ import annotations

from celery_durable import workflow

from .scheduled import tick_report


@workflow(name="scheduled.every_second", schedule="1s")
def every_second() -> dict:
    return tick_report()
