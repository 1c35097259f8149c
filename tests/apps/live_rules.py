"""An app for `tests/test_rules_live.py`: workers whose rules change while they run.

Its tasks fail on purpose (`live.fail`, `live.dormant`: `ValueError("probe <n>")`);
the rules' `remember` action (from `tests.plugin_for_tests`) pushes the
rendered note to a Redis list, which the test reads. `dormant` is a rule of
the configuration written `enabled: false`.
"""

from __future__ import annotations

import os

from celery import Celery

from . import NOWHERE_URL, REDIS_URL_ENV, make_worker_app

CONFIG_RULES = [
    {
        "name": "dormant",
        "enabled": False,
        "trigger": {"event": "task.failed", "conditions": {"task_name_pattern": "live.dormant"}},
        "action": {"type": "remember", "key": "test:dormant", "note": "{error_message}"},
    }
]


def make_app(redis_url: str, main: str = "tests.apps.live_rules") -> Celery:
    return make_worker_app(
        main, redis_url, durable_plugins=["tests.plugin_for_tests"], durable_rules=CONFIG_RULES
    )


app = make_app(os.environ.get(REDIS_URL_ENV) or NOWHERE_URL)


@app.task(name="live.fail")
def fail(n: int) -> None:
    raise ValueError(f"probe {n}")


@app.task(name="live.dormant")
def dormant(n: int) -> None:
    raise ValueError(f"probe {n}")
