"""A Celery app with a catastrophic `error_pattern`, for `celery -A tests.apps.redos worker`.

The rule `evil` searches `(a+)+$`, which a backtracking engine takes hours
to fail on `"a" * 40 + "!"`; its webhook goes to the URL in `HOOK_URL_ENV`
(the test's HTTP receiver). `redos.fail` raises its argument as the error
message; `redos.ok` pushes its token to `OK_KEY` so that the test sees it
served.
"""

from __future__ import annotations

import os

from celery import Celery

import celery_durable
from celery_durable.extension import extension_for

from . import NOWHERE_URL, REDIS_URL_ENV

HOOK_URL_ENV = "DURABLE_TEST_HOOK_URL"
OK_KEY = "test:redos:ok"
EVIL_PATTERN = "(a+)+$"

url = os.environ.get(REDIS_URL_ENV) or NOWHERE_URL
app = Celery("tests.apps.redos", broker=url, set_as_current=False)
app.conf.update(
    durable_redis_url=url,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    durable_rules=[
        {
            "name": "evil",
            "trigger": {"event": "task.failed", "conditions": {"error_pattern": EVIL_PATTERN}},
            "action": {
                "type": "webhook",
                "url": os.environ.get(HOOK_URL_ENV) or "http://127.0.0.1:9/unused",
            },
        }
    ],
)
celery_durable.install(app)


@app.task(name="redos.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="redos.ok")
def ok(token: str) -> None:
    extension_for(app).redis.rpush(OK_KEY, token)
