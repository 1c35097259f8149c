"""Apps for `tests/test_cli_plugins.py`: one rule that needs the plugin of `tests.plugin_for_tests`.

`-A tests.apps.plugged:with_plugin` lists that plugin in `durable_plugins`;
`...:without_plugin` forgot it, so its rule's action type is unknown. Both
point at the Redis of `DURABLE_CLI_TEST_REDIS_URL`, like `tests.apps.cli_app`.
"""

from __future__ import annotations

import os

from celery import Celery

import celery_durable

from . import NOWHERE_URL

URL = os.environ.get("DURABLE_CLI_TEST_REDIS_URL", NOWHERE_URL)

RULES = [
    {
        "name": "remember failures",
        "trigger": {"event": "task.failed"},
        "action": {"type": "remember", "key": "test:remembered"},
    }
]


def _app(name: str, plugins: list[str]) -> Celery:
    app = Celery(name, broker=URL, set_as_current=False)
    app.conf.update(durable_redis_url=URL, durable_plugins=plugins, durable_rules=RULES)
    celery_durable.install(app)
    return app


with_plugin = _app("plugged_with", ["tests.plugin_for_tests"])
without_plugin = _app("plugged_without", [])
