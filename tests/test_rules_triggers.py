"""The triggers that do not come from a task's own failure: orphaned tasks,
workers going offline, tasks running too long."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import task_revoked
from kombu.serialization import dumps

import celery_durable
from celery_durable.codec import packb_lenient
from celery_durable.extension import extension_for
from tests.in_process import solo_worker
from tests.waiting import wait_until

GHOST = "ghost@nowhere"


@pytest.fixture
def durable_app_config(http_receiver) -> dict[str, Any]:
    return {
        "durable_heartbeat_interval": 0.2,
        "durable_worker_timeout": 1.0,
        "durable_rules": [
            {"name": "recover orphans", "template": "recover-orphaned-tasks"},
            {
                "name": "page on worker loss",
                "trigger": {"event": "worker.offline"},
                "action": {"type": "webhook", "url": f"{http_receiver.url}/offline"},
            },
            {
                "name": "stop runaways",
                "trigger": {
                    "event": "task.execution_time_exceeded",
                    "threshold_seconds": 0.5,
                    "conditions": {"task_name_pattern": "myapp.tasks.runaway"},
                },
                "actions": [
                    {"type": "revoke", "terminate": True, "signal": "SIGKILL"},
                    {"type": "webhook", "url": f"{http_receiver.url}/runaway"},
                ],
            },
        ],
    }


def register_tasks(app: Celery) -> None:
    redis = extension_for(app).redis

    @app.task(name="myapp.tasks.orphan", bind=True, shared=False)
    def orphan(self, order_id, *, note):
        redis.rpush(
            "test:orphan",
            json.dumps(
                {
                    "order_id": order_id,
                    "note": note,
                    "queue": self.request.delivery_info.get("routing_key"),
                    "retry_of": (self.request.headers or {}).get("durable_retry_of"),
                }
            ),
        )

    @app.task(name="myapp.tasks.runaway", shared=False)
    def runaway():
        redis.incr("test:runaway:started")
        time.sleep(30)
        redis.incr("test:runaway:finished")


@pytest.fixture
def rules_worker(durable_app: Celery) -> Iterator[Any]:
    register_tasks(durable_app)
    with solo_worker(durable_app, ["celery", "orders"]) as worker:
        yield worker


def test_orphaned_tasks_of_a_dead_worker_are_resent_exactly(
    durable_app, rules_worker, http_receiver
):
    ext = extension_for(durable_app)
    content_type, encoding, body = dumps([[1001], {"note": "gift wrap"}, {}], "json")
    record = {
        "task_id": "lost-1",
        "task_name": "myapp.tasks.orphan",
        "worker": GHOST,
        "body": body.encode() if isinstance(body, str) else body,
        "content_type": content_type,
        "content_encoding": encoding,
        "headers": {"task": "myapp.tasks.orphan", "id": "lost-1", "properties": {"priority": 0}},
        "delivery_info": {"exchange": "", "routing_key": "orders", "priority": 0},
    }
    ext.redis.zadd(ext.keys.workers(), {GHOST: time.time() - 3600})
    ext.redis.hset(ext.keys.worker_tasks(GHOST), "lost-1", packb_lenient(record))
    wait_until(lambda: ext.redis.llen("test:orphan") == 1, what="the re-sent task")
    ran = json.loads(ext.redis.lindex("test:orphan", 0))
    assert ran == {"order_id": 1001, "note": "gift wrap", "queue": "orders", "retry_of": "lost-1"}
    (post,) = http_receiver.wait_for(1)
    assert post["path"] == "/offline"
    assert post["json"]["event"]["data"]["worker"] == GHOST
    assert post["json"]["event"]["data"]["tasks"] == ["lost-1"]
    wait_until(lambda: celery_durable.rule_history("recover orphans"), what="history")
    (entry,) = celery_durable.rule_history("recover orphans")
    assert entry["event"]["type"] == "task.orphaned"
    assert entry["outcome"] == "success"


def test_a_task_running_too_long_is_reported_once_and_revoked(durable_app, http_receiver):
    register_tasks(durable_app)
    revoked = []
    handler = lambda sender=None, request=None, **kw: revoked.append(  # noqa: E731
        (request.id, kw.get("terminated"))
    )
    task_revoked.connect(handler, weak=False)
    try:
        with start_worker(
            durable_app,
            pool="prefork",
            concurrency=1,
            perform_ping_check=False,
            shutdown_timeout=30,
        ):
            result = durable_app.send_task("myapp.tasks.runaway")
            wait_until(lambda: revoked, timeout=20, what="the revocation")
            (post,) = http_receiver.wait_for(1)
    finally:
        task_revoked.disconnect(handler)
    assert revoked == [(result.id, True)]
    data = post["json"]["event"]["data"]
    assert post["path"] == "/runaway"
    assert (data["task_id"], data["threshold_seconds"]) == (result.id, 0.5)
    assert data["runtime"] >= 0.5
    redis = extension_for(durable_app).redis
    assert int(redis.get("test:runaway:started") or 0) == 1
    assert redis.get("test:runaway:finished") is None
    (entry,) = celery_durable.rule_history("stop runaways")
    assert [a["type"] for a in entry["actions"]] == ["revoke", "webhook"]
    assert entry["actions"][0]["result"]["revoked"] == result.id
