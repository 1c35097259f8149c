"""The app `celery -A tests.apps.cli_app durable ...` runs against in tests/test_cli.py."""

from __future__ import annotations

import os

from celery import Celery

import celery_durable
import tests.steps  # noqa: F401 - registers the workflows the CLI tests run

URL = os.environ.get("DURABLE_CLI_TEST_REDIS_URL", "redis://127.0.0.1:1/0")

app = Celery("cli_app", broker=URL, set_as_current=False)
app.conf.update(
    durable_redis_url=URL,
    broker_connection_retry_on_startup=True,
    durable_rules=[
        {
            "name": "flaky mail",
            "trigger": {
                "event": "task.failed",
                "conditions": {"task_name_pattern": "mail.*", "error_pattern": "ConnectionError"},
            },
            "action": {"type": "webhook", "url": "http://127.0.0.1:9/hook?token=CLISECRET"},
            "circuit_breaker": {"max_executions": 2},
        },
        {
            "name": "quiet",
            "enabled": False,
            "trigger": {"event": "worker.offline"},
            "action": {"type": "webhook", "url": "http://127.0.0.1:9/quiet"},
        },
    ],
)
celery_durable.install(app)
