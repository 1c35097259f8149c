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


def test_durable_event_sees_every_event_of_the_global_stream_in_every_process(durable_app):
    """Also where no rule is evaluated: a client cancelling a run that is not executing."""
    import celery_durable
    from celery_durable.codec import unpackb
    from tests.plugin_for_tests import SEEN_EVENTS
    from tests.steps import arithmetic

    SEEN_EVENTS.clear()
    ext = extension_for(durable_app)
    pending = celery_durable.start(arithmetic, 1, 2)  # no worker yet: the run waits
    assert pending.cancel() is True
    assert [(e.type, e.data["run_id"]) for e in SEEN_EVENTS] == [("workflow.cancelled", pending.id)]

    @durable_app.task(name="plugins.broken", shared=False)
    def broken():
        raise RuntimeError("disk full")

    with start_worker(durable_app, pool="solo", perform_ping_check=False):
        done = celery_durable.start(arithmetic, 2, 3)
        done.result(timeout=15)
        durable_app.send_task("plugins.broken")
        deadline = time.monotonic() + 15
        while ext.redis.xlen(ext.keys.events()) < 3:
            assert time.monotonic() < deadline, "the events did not reach the stream"
            time.sleep(0.02)
    stream = [unpackb(f[b"e"])["type"] for _, f in ext.redis.xrange(ext.keys.events())]
    assert sorted(stream) == sorted(e.type for e in SEEN_EVENTS)
    assert sorted(stream) == ["task.failed", "workflow.cancelled", "workflow.completed"]
