"""Rules reacting to real task failures in a real worker, with real HTTP receivers."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

import celery_durable
from celery_durable import signals
from celery_durable.codec import unpackb
from celery_durable.extension import extension_for
from celery_durable.rules.action_queue import ActionQueue
from tests.in_process import solo_worker
from tests.waiting import wait_until

RETRY_THEN_SLACK = "retry then slack"


def rules_for(url: str) -> list[dict[str, Any]]:
    return [
        {
            "name": RETRY_THEN_SLACK,
            "trigger": {
                "event": "task.failed",
                "conditions": {
                    "task_name_pattern": "myapp.tasks.flaky*",
                    "queue": "email",
                    "error_pattern": "ConnectionError",
                },
            },
            "actions": [
                {
                    "type": "retry",
                    "delay_seconds": 0.2,
                    "max_attempts": 3,
                    "exponential_backoff": True,
                    "backoff_multiplier": 2,
                },
                {
                    "type": "slack",
                    "webhook_url": f"{url}/slack",
                    "message": "{task_name} failed on {worker} (attempt {attempt}): "
                    "{error_message}",
                },
            ],
        },
        {
            "name": "capped",
            "trigger": {
                "event": "task.failed",
                "conditions": {"task_name_pattern": "myapp.tasks.always_fails"},
            },
            "action": {"type": "retry", "delay_seconds": 0, "max_attempts": 100},
            "circuit_breaker": {
                "max_executions": 3,
                "time_window_hours": 1,
                "notify": {"type": "webhook", "url": f"{url}/breaker"},
            },
        },
        {
            "name": "third failure",
            "trigger": {
                "event": "task.failed",
                "conditions": {
                    "task_name_pattern": "myapp.tasks.counted",
                    "failure_count_threshold": 3,
                },
            },
            "action": {
                "type": "webhook",
                "url": f"{url}/third",
                "headers": {"X-Token": "s3cret"},
                "timeout": 5,
                "retries": 2,
            },
        },
        {
            "name": "give up",
            "trigger": {
                "event": "task.failed",
                "conditions": {"task_name_pattern": "myapp.tasks.stubborn"},
            },
            "actions": [
                {"type": "retry", "max_attempts": 1},
                {"type": "webhook", "url": f"{url}/gave-up"},
            ],
        },
        {
            "name": "fall back",
            "trigger": {
                "event": "task.failed",
                "conditions": {"task_name_pattern": "myapp.tasks.send_sms"},
            },
            "action": {
                "type": "retry",
                "same_arguments": False,
                "args": ["+420 555 0100"],
                "kwargs": {"provider": "backup"},
            },
        },
        {
            "name": "dormant",
            "enabled": False,
            "trigger": {
                "event": "task.failed",
                "conditions": {"task_name_pattern": "myapp.tasks.dormant"},
            },
            "action": {"type": "webhook", "url": f"{url}/dormant"},
        },
        {
            "name": "workflow failures",
            "trigger": {
                "event": "workflow.failed",
                "conditions": {"workflow_name_pattern": "tests.*"},
            },
            "action": {"type": "webhook", "url": f"{url}/workflow"},
        },
    ]


@pytest.fixture
def durable_app_config(http_receiver) -> dict[str, Any]:
    return {"durable_rules": rules_for(http_receiver.url), "task_default_queue": "celery"}


@pytest.fixture
def rules_worker(durable_app: Celery) -> Iterator[Any]:
    """An in-process worker on the queues the tests use, with the test tasks."""
    register_tasks(durable_app)
    with solo_worker(durable_app, ["celery", "email"]) as worker:
        yield worker


def register_tasks(app: Celery) -> None:
    redis = extension_for(app).redis

    @app.task(name="myapp.tasks.flaky", bind=True, shared=False)
    def flaky(self, n, when, *, key):
        calls = redis.incr(f"test:calls:{key}")
        redis.rpush(
            f"test:seen:{key}",
            json.dumps(
                {
                    "n": n,
                    "n_type": type(n).__name__,
                    "when": repr(when),
                    "routing_key": self.request.delivery_info.get("routing_key"),
                    "priority": self.request.delivery_info.get("priority"),
                    "custom": (self.request.headers or {}).get("custom"),
                    "retry_of": (self.request.headers or {}).get("durable_retry_of"),
                    "id": self.request.id,
                }
            ),
        )
        if calls < 3:
            raise ConnectionError(f"smtp down (call {calls})")
        return "sent"

    @app.task(name="myapp.tasks.always_fails", shared=False)
    def always_fails():
        redis.incr("test:calls:always_fails")
        raise ConnectionError("never works")

    @app.task(name="myapp.tasks.counted", shared=False)
    def counted():
        raise ValueError("bad input")

    @app.task(name="myapp.tasks.stubborn", shared=False)
    def stubborn():
        redis.incr("test:calls:stubborn")
        raise ConnectionError("still down")

    @app.task(name="myapp.tasks.send_sms", shared=False)
    def send_sms(to, *, provider):
        redis.rpush("test:sms", json.dumps([to, provider]))
        if provider == "primary":
            raise ConnectionError("primary SMS gateway down")

    @app.task(name="myapp.tasks.dormant", shared=False)
    def dormant(n):
        raise ValueError(f"dormant {n}")

    @app.task(name="myapp.tasks.other", shared=False)
    def other():
        raise ConnectionError("not ours")


def calls(app: Celery, key: str) -> int:
    return int(extension_for(app).redis.get(f"test:calls:{key}") or 0)


def seen(app: Celery, key: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in extension_for(app).redis.lrange(f"test:seen:{key}", 0, -1)]


def send_flaky(app: Celery, key: str) -> str:
    when = dt.datetime(2026, 11, 21, 8, 30)  # naive: JSON keeps it, msgpack would not
    result = app.send_task(
        "myapp.tasks.flaky",
        args=(7, when),
        kwargs={"key": key},
        queue="email",
        priority=5,
        headers={"custom": "kept"},
    )
    return result.id


def test_retry_resends_the_exact_task_and_records_the_chain(
    durable_app, rules_worker, http_receiver
):
    first_id = send_flaky(durable_app, "exact")
    wait_until(lambda: calls(durable_app, "exact") == 3, what="two retries")
    attempts = seen(durable_app, "exact")
    _original, *retries = attempts
    for attempt in retries:
        assert attempt["n"] == 7 and attempt["n_type"] == "int"
        assert attempt["when"] == repr(dt.datetime(2026, 11, 21, 8, 30))
        assert attempt["routing_key"] == "email"
        assert attempt["priority"] == 5
        assert attempt["custom"] == "kept"
    assert retries[0]["retry_of"] == first_id
    assert retries[1]["retry_of"] == retries[0]["id"]
    chain = celery_durable.retry_chain(retries[1]["id"])
    assert chain == [first_id, retries[0]["id"], retries[1]["id"]]
    # Slack heard about both failures, rendered with the real names.
    posts = http_receiver.wait_for(2)
    texts = sorted(p["json"]["text"] for p in posts if p["path"] == "/slack")
    assert texts[0].startswith("myapp.tasks.flaky failed on ")
    assert "(attempt 0): smtp down (call 1)" in texts[0]
    assert "(attempt 1): smtp down (call 2)" in texts[1]
    # History: two successful executions with the retry's result and the breaker.
    wait_until(
        lambda: len(celery_durable.rule_history(RETRY_THEN_SLACK)) == 2, what="two history entries"
    )
    entry = celery_durable.rule_history(RETRY_THEN_SLACK)[-1]
    assert entry["outcome"] == "success"
    assert entry["event"]["type"] == "task.failed"
    assert [c["condition"] for c in entry["conditions"]] == [
        "task_name_pattern",
        "queue",
        "error_pattern",
    ]
    assert all(c["holds"] for c in entry["conditions"])
    assert [a["type"] for a in entry["actions"]] == ["retry", "slack"]
    assert entry["actions"][0]["result"]["retry_of"] == first_id
    assert entry["actions"][0]["result"]["delay"] == pytest.approx(0.2)
    assert entry["breaker"]["state"] == "closed"


def test_conditions_must_all_hold(durable_app, rules_worker, processed):
    result = durable_app.send_task("myapp.tasks.other")
    processed()  # the failing task ran (no args)
    wait_until(lambda: result.id in _event_task_ids(durable_app), what="the failure event")
    assert celery_durable.rule_history(RETRY_THEN_SLACK) == []
    assert calls(durable_app, "exact") == 0


def test_breaker_caps_retries_per_window_and_notifies_once(
    durable_app, rules_worker, http_receiver
):
    opened = []
    signals.breaker_opened.connect(lambda sender, **kw: opened.append(sender), weak=False)
    durable_app.send_task("myapp.tasks.always_fails")
    wait_until(
        lambda: any(r["path"] == "/breaker" for r in http_receiver.requests),
        what="the breaker notification",
    )
    wait_until(
        lambda: any(e["outcome"] == "skipped" for e in celery_durable.rule_history("capped")),
        what="a skip",
    )
    # The skip was the 4th failure's evaluation: nothing was sent after it.
    assert calls(durable_app, "always_fails") == 4  # the original and 3 retries, no more
    assert celery_durable.breaker_state("capped")["state"] == "open"
    assert [r["path"] for r in http_receiver.requests].count("/breaker") == 1
    assert opened == ["capped"]
    celery_durable.reset_breaker("capped")
    assert celery_durable.breaker_state("capped")["state"] == "closed"


def test_failure_count_threshold_fires_from_the_nth_failure(
    durable_app, rules_worker, http_receiver
):
    for _ in range(4):
        durable_app.send_task("myapp.tasks.counted")
    posts = http_receiver.wait_for(2)
    assert [p["path"] for p in posts] == ["/third", "/third"]  # the 3rd and the 4th
    assert posts[0]["headers"]["X-Token"] == "s3cret"
    body = posts[0]["json"]
    assert body["rule"] == "third failure"
    assert body["event"]["type"] == "task.failed"
    assert body["event"]["data"]["task_name"] == "myapp.tasks.counted"
    assert body["event"]["data"]["error_message"] == "bad input"
    assert "message" not in body["event"]["data"]


def test_webhook_retries_server_errors(durable_app, rules_worker, http_receiver):
    http_receiver.statuses = [503, 502]
    for _ in range(3):
        durable_app.send_task("myapp.tasks.counted")
    posts = http_receiver.wait_for(3)
    assert [p["path"] for p in posts] == ["/third"] * 3
    wait_until(lambda: celery_durable.rule_history("third failure"), what="history")
    (entry,) = celery_durable.rule_history("third failure")
    assert entry["actions"][0]["result"] == {"status": 200, "attempts": 3}


def test_a_retry_out_of_attempts_is_recorded_as_skipped(durable_app, rules_worker, http_receiver):
    durable_app.send_task("myapp.tasks.stubborn")
    http_receiver.wait_for(2)  # the webhook ran after each evaluation
    wait_until(lambda: len(celery_durable.rule_history("give up")) == 2, what="history")
    last, first = celery_durable.rule_history("give up")  # newest first
    assert calls(durable_app, "stubborn") == 2  # the original and max_attempts=1 retry
    assert first["outcome"] == "success"
    assert last["outcome"] == "skipped"
    assert last["actions"][0]["skipped"] is True
    assert "max_attempts (1) reached" in last["actions"][0]["result"]
    assert last["actions"][1]["ok"] is True  # the later action still ran


def test_a_failed_workflow_fires_workflow_rules(durable_app, rules_worker, http_receiver):
    from tests.test_workflows import plain_failure

    run = celery_durable.start(plain_failure)
    with pytest.raises(ValueError):
        run.result(timeout=15)
    (post,) = http_receiver.wait_for(1)
    assert post["path"] == "/workflow"
    assert post["json"]["event"]["data"]["workflow_name"] == "tests.plain_failure"
    assert post["json"]["event"]["data"]["run_id"] == run.id


def test_a_disabled_rule_does_not_fire(durable_app, rules_worker, processed):
    celery_durable.set_rule_enabled("third failure", False)
    assert [r["enabled"] for r in celery_durable.list_rules() if r["name"] == "third failure"] == [
        False
    ]
    for _ in range(3):
        durable_app.send_task("myapp.tasks.counted")
    processed(times=3)
    assert celery_durable.rule_history("third failure") == []
    celery_durable.set_rule_enabled("third failure", True)


def test_a_retry_with_same_arguments_false_sends_the_arguments_of_the_action(
    durable_app, rules_worker
):
    redis = extension_for(durable_app).redis
    first = durable_app.send_task(
        "myapp.tasks.send_sms", args=("+420 555 0199",), kwargs={"provider": "primary"}
    )
    wait_until(lambda: redis.llen("test:sms") == 2, what="the retry with other arguments")
    sent = [json.loads(x) for x in redis.lrange("test:sms", 0, -1)]
    assert sent == [["+420 555 0199", "primary"], ["+420 555 0100", "backup"]]
    wait_until(lambda: celery_durable.rule_history("fall back"), what="the history entry")
    (entry,) = celery_durable.rule_history("fall back")
    assert entry["actions"][0]["result"]["retry_of"] == first.id


def test_a_rule_written_disabled_is_switched_on_and_back(
    durable_app, rules_worker, processed, http_receiver
):
    durable_app.send_task("myapp.tasks.dormant", args=(1,))
    processed(1)
    assert celery_durable.rule_history("dormant") == []  # as its file says
    celery_durable.set_rule_enabled("dormant", True)
    durable_app.send_task("myapp.tasks.dormant", args=(2,))
    (post,) = http_receiver.wait_for(1)
    assert post["path"] == "/dormant"
    assert post["json"]["event"]["data"]["error_message"] == "dormant 2"
    (listed,) = [r for r in celery_durable.list_rules() if r["name"] == "dormant"]
    assert (listed["enabled"], listed["enabled_in_file"], listed["switch"]) == (True, False, "on")
    celery_durable.set_rule_enabled("dormant", None)  # the file decides again
    task_id = post["json"]["event"]["data"]["task_id"]
    # The activity writer stores the failure apart from the rules that act on it.
    wait_until(lambda: task_id in _event_task_ids(durable_app), what="the failure event")
    assert celery_durable.dry_run("dormant", task_id=task_id).reason == ("the rule is disabled")


def test_dry_run_reports_without_side_effects(durable_app, rules_worker):
    ext = extension_for(durable_app)
    event = {
        "type": "task.failed",
        "data": {
            "task_id": "t-1",
            "task_name": "myapp.tasks.flaky",
            "queue": "email",
            "worker": "w@h",
            "error_type": "ConnectionError",
            "error_message": "smtp down",
            "retry": {"attempt": 1},
            "message": {
                "task_name": "myapp.tasks.flaky",
                "options": {"queue": "email"},
                "retry": {"attempt": 1},
            },
        },
    }
    before = ext.redis.dbsize()
    report = celery_durable.dry_run(RETRY_THEN_SLACK, event)
    assert report.would_fire is True
    assert report.breaker["state"] == "closed"
    retry, slack = report.actions
    assert retry["type"] == "retry" and retry["attempt"] == 2
    assert retry["delay_seconds"] == pytest.approx(0.4)
    assert slack["message"] == "myapp.tasks.flaky failed on w@h (attempt 1): smtp down"
    assert ext.redis.dbsize() == before  # nothing written
    assert ActionQueue(ext.redis, ext.keys).pending() == 0

    miss = celery_durable.dry_run(
        RETRY_THEN_SLACK, {**event, "data": {**event["data"], "queue": "celery"}}
    )
    assert miss.would_fire is False and "queue" in miss.reason


def test_dry_run_of_a_past_task_by_its_id(durable_app, rules_worker):
    result = durable_app.send_task("myapp.tasks.counted")
    wait_until(lambda: result.id in _event_task_ids(durable_app), what="the failure event")
    report = celery_durable.dry_run("third failure", task_id=result.id)
    assert report.event["data"]["task_id"] == result.id
    assert [c["condition"] for c in report.conditions] == [
        "task_name_pattern",
        "failure_count_threshold",
    ]
    with pytest.raises(celery_durable.DurableError, match="no event about task"):
        celery_durable.dry_run("third failure", task_id="never-ran")


def test_send_test_notification_posts_once_with_sample_data(durable_app, http_receiver):
    results = celery_durable.send_test_notification(RETRY_THEN_SLACK)
    assert [r["type"] for r in results] == ["slack"] and results[0]["ok"]
    (post,) = http_receiver.wait_for(1)
    assert post["json"]["text"].startswith("example.tasks.sample failed on celery@example")
    with pytest.raises(celery_durable.errors.ConfigurationError, match="no rule named"):
        celery_durable.send_test_notification("nope")


def test_signals_for_code_that_prefers_them(durable_app, rules_worker, http_receiver):
    fired, done = [], []
    signals.rule_fired.connect(lambda sender, **kw: fired.append(sender), weak=False)
    signals.action_done.connect(
        lambda sender, **kw: done.append((sender, kw["action"], kw["ok"])), weak=False
    )
    for _ in range(3):
        durable_app.send_task("myapp.tasks.counted")
    wait_until(lambda: done, what="an action")
    assert fired == ["third failure"]
    assert done == [("third failure", "webhook", True)]


def _event_task_ids(app: Celery) -> set[str]:
    ext = extension_for(app)
    return {unpackb(f[b"e"])["data"].get("task_id") for _, f in ext.redis.xrange(ext.keys.events())}
