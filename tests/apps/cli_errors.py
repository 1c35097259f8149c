"""Apps for `tests/test_cli_errors.py`: `-A tests.apps.cli_errors:retrying` and `...:broken`.

`retrying` has a rule with a `retry` action (its dry run reads the event's
task message); `broken` has rules with several problems. Both point at the
Redis of `DURABLE_CLI_TEST_REDIS_URL`, like `tests.apps.cli_app`.
"""

from __future__ import annotations

import os

from celery import Celery

import celery_durable

from . import NOWHERE_URL

URL = os.environ.get("DURABLE_CLI_TEST_REDIS_URL", NOWHERE_URL)


def _app(name: str, rules: list) -> Celery:
    app = Celery(name, broker=URL, set_as_current=False)
    app.conf.update(durable_redis_url=URL, durable_rules=rules)
    celery_durable.install(app)
    return app


retrying = _app(
    "cli_errors_retrying",
    [
        {
            "name": "retry mail",
            "trigger": {"event": "task.failed", "conditions": {"task_name_pattern": "mail.*"}},
            "action": {"type": "retry", "delay_seconds": 5},
        }
    ],
)

broken = _app(
    "cli_errors_broken",
    [
        {"name": "first", "trigger": {"event": "task.exploded"}, "action": {"type": "retry"}},
        {
            "name": "second",
            "trigger": {"event": "task.failed"},
            "actions": [{"type": "retry", "delay": 5}],
        },
    ],
)
