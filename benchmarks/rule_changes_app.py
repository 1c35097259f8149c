"""The Celery app and plugin that `benchmarks/rule_changes.py` measures.

The worker imports this module with `celery -A benchmarks.rule_changes_app
worker`. It finds its Redis (broker and journal) in the environment variable
named by `REDIS_URL_ENV`, and its configuration in `CONFIG_ENV`:

- `plain`: a plain Celery app, celery_durable not installed (the baseline,
  whose only way to change what reacts to failures is a restart);
- `durable` (the default): the same app with `celery_durable.install(app)`
  and this module as a plugin (`durable_plugins`), no rules in its
  configuration: the benchmark stores them at run time.

The plugin's action `bench_mark` pushes, for each failure it acts on, its
`tag`, the time the failure was evaluated (the event's `ts`, taken in the
pool process that ran the task) and the worker, to `MARKS_KEY`. A rule
changed at time t reached a worker when a mark with the new tag and a `ts`
after t appears for it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery

import celery_durable
from celery_durable import Action, hookimpl

REDIS_URL_ENV = "CELERY_DURABLE_BENCH_REDIS_URL"
CONFIG_ENV = "CELERY_DURABLE_BENCH_RULE_CHANGES_CONFIG"
CONFIGS = ("plain", "durable")
MARKS_KEY = "rule_changes_bench:marks"
TASK_NAME = "rule_changes_bench.fail"


class BenchMark(Action):
    """Records which version of the rule (its `tag`) acted on a failure, and when."""

    name = "bench_mark"

    def __init__(self, tag: str):
        self.tag = tag

    def run(self, event: Any, context: Any) -> Any:
        mark = {"tag": self.tag, "ts": event.ts, "worker": event.data.get("worker")}
        context.redis.rpush(MARKS_KEY, json.dumps(mark))
        return mark


@hookimpl
def durable_actions() -> list[type[Action]]:
    return [BenchMark]


def make_app(url: str, config: str) -> Celery:
    if config not in CONFIGS:
        raise RuntimeError(f"{CONFIG_ENV}={config!r}: expected one of {', '.join(CONFIGS)}")
    app = Celery("rule_changes_bench", set_as_current=False)
    app.conf.update(
        broker_url=url,
        durable_redis_url=url,
        broker_connection_retry_on_startup=True,
        durable_plugins=["benchmarks.rule_changes_app"],
    )
    if config == "durable":
        celery_durable.install(app)

    @app.task(name=TASK_NAME, shared=False)
    def fail(n: int) -> None:
        raise ValueError(f"probe {n}")

    return app


app = make_app(
    os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"),
    os.environ.get(CONFIG_ENV, "durable"),
)
