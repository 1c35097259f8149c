"""Schedules without Celery Beat: workflows started on a cron string or an interval.

A schedule lives in Redis (its definition and state in a hash, its name in a
sorted set of names); its next tick is a `schedule:<name>` member of the
durable timers' sorted set, so every worker's timer poller claims it under
the same lease as sleeps and timeouts, and exactly one worker fires each
tick. Firing starts the tick's run with an idempotency key made of the
schedule's name and the tick, then moves the member on to the next tick.

- `timing`: when ticks fall (cron via cronsim, or an interval), validated.
- `model`: a schedule's definition and state, and their Redis encoding.
- `store`: reading and writing schedules (the Lua scripts beside it).
- `firing`: what the poller calls for due `schedule:` members.
- `api`: `schedule()`, `pause_schedule()`, ... for code and the CLI.
- `registration`: `@workflow(schedule=...)` stored when a worker starts.
- `cli`: `celery -A app durable schedules ...`.

This package's `__init__` imports nothing: workflow definitions import
`timing` while the package's other modules import the workflows.
"""
