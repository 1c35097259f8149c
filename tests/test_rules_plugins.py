"""A plugin from `durable_plugins`, used by a rule, in a real worker."""

from __future__ import annotations

import time
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from celery_durable.extension import extension_for


@pytest.fixture
def durable_app_config() -> dict[str, Any]:
    return {
        "durable_plugins": ["tests.plugin_for_tests"],
        "durable_rules": [
            {
                "name": "remember failures",
                "trigger": {
                    "event": "task.failed",
                    "conditions": {"task_name_pattern": "plugins.*"},
                },
                "action": {
                    "type": "remember",
                    "key": "test:remembered",
                    "note": "{task_name}: {error_message}",
                },
            }
        ],
    }


def test_a_plugin_action_runs_for_a_rule(durable_app):
    @durable_app.task(name="plugins.broken", shared=False)
    def broken():
        raise RuntimeError("disk full")

    redis = extension_for(durable_app).redis
    with start_worker(durable_app, pool="solo", perform_ping_check=False):
        durable_app.send_task("plugins.broken")
        deadline = time.monotonic() + 15
        while not redis.llen("test:remembered"):
            assert time.monotonic() < deadline, "the plugin's action did not run"
            time.sleep(0.02)
    assert redis.lrange("test:remembered", 0, -1) == [b"plugins.broken: disk full"]
