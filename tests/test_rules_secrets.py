"""Secrets in rules stay out of logs, Redis and command output (issue 9, item 10).

A Slack webhook URL is its own credential, and a webhook URL may carry a
token; both appeared in the worker log (httpx's request line at INFO, the
action's failure at WARNING), in the rule history and in dry runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis as redis_lib
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable.redaction import ARGS_PLACEHOLDER, redact_url, scrub
from tests.waiting import wait_until

SLACK_PATH = "/services/T0SECRET/B0SECRET/x0x0SECRET"
TOKEN = "tok3nSECRET"


@pytest.fixture
def durable_app_config(http_receiver) -> dict[str, Any]:
    return {
        "task_default_queue": "celery",
        "durable_rules": [
            {
                "name": "tell people",
                "trigger": {
                    "event": "task.failed",
                    "conditions": {"task_name_pattern": "secrets.*"},
                },
                "actions": [
                    {
                        "type": "slack",
                        "webhook_url": f"{http_receiver.url}{SLACK_PATH}",
                        "message": "{task_name} failed",
                    },
                    {"type": "webhook", "url": f"{http_receiver.url}/hook?token={TOKEN}"},
                ],
            }
        ],
    }


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in self.records)


@contextlib.contextmanager
def captured(*names: str) -> Iterator[Records]:
    """Every record of these loggers at INFO and above, whatever the root's level."""
    handler = Records()
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


def redis_holds(client: redis_lib.Redis, needle: bytes) -> list[str]:
    """The keys whose value contains `needle`, whatever their type."""
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"stream":
            values = [v for _, f in client.xrange(key) for v in f.values()]
        elif kind == b"hash":
            values = list(client.hvals(key))
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        elif kind == b"set":
            values = list(client.smembers(key))
        else:
            values = [client.get(key) or b""]
        if any(needle in v for v in values):
            found.append(key.decode())
    return found


def test_urls_of_actions_are_redacted_in_logs_history_and_dry_runs(
    durable_app, http_receiver, redis_client
):
    @durable_app.task(name="secrets.fail", shared=False)
    def fail(password):
        raise ConnectionError("down")

    slack_url = f"{http_receiver.url}{SLACK_PATH}"
    hook_url = f"{http_receiver.url}/hook?token={TOKEN}"
    http_receiver.statuses = [200, 404]  # slack gets its 200, the webhook a 404 (not retried)
    with (
        captured("httpx", "celery_durable") as logs,
        start_worker(durable_app, pool="solo", perform_ping_check=False, shutdown_timeout=30),
    ):
        durable_app.send_task("secrets.fail", args=("hunter2-PASSWORD",))
        wait_until(lambda: celery_durable.rule_history("tell people"), what="the history entry")
        # Another httpx client in the same process is still logged: only ours is quiet.
        httpx.post(f"{http_receiver.url}/not-an-action")
    assert sorted(r["path"] for r in http_receiver.requests) == sorted(
        [SLACK_PATH, f"/hook?token={TOKEN}", "/not-an-action"]
    )  # the real URLs were used
    (entry,) = celery_durable.rule_history("tell people")
    slack, webhook = entry["actions"]
    assert slack["ok"] is True and webhook["ok"] is False
    assert f"for url '{redact_url(hook_url)}'" in webhook["error"]
    text = logs.text()
    assert "action webhook failed" in text and redact_url(hook_url) in text
    assert "HTTP Request: POST" in text and "/not-an-action" in text
    for secret in ("SECRET", TOKEN):
        assert secret not in text
        assert redis_holds(redis_client, secret.encode()) == []
        assert secret not in str(entry)

    report = celery_durable.dry_run(
        "tell people",
        {"type": "task.failed", "data": {"task_name": "secrets.x", "error_message": "down"}},
    )
    shown_slack, shown_hook = report.actions
    assert shown_slack["webhook_url"] == redact_url(slack_url)
    assert shown_hook["url"] == redact_url(hook_url)
    assert "SECRET" not in str(report.as_dict())

    http_receiver.statuses = [500]  # slack answers 500: httpx's error names the URL
    results = celery_durable.send_test_notification("tell people")
    assert results[0]["ok"] is False and redact_url(slack_url) in results[0]["error"]
    assert "SECRET" not in str(results)


def test_redacted_url_keeps_scheme_and_host_and_tells_urls_apart():
    one = redact_url("https://hooks.slack.com/services/T0/B0/abc?token=x")
    assert one.startswith("https://hooks.slack.com/…#") and len(one.split("#")[1]) == 6
    assert one != redact_url("https://hooks.slack.com/services/T0/B0/abd")
    assert redact_url("http://user:pw@127.0.0.1:8080/x").startswith("http://127.0.0.1:8080/…#")
    assert "pw" not in redact_url("http://user:pw@127.0.0.1:8080/x")
    message = (
        "Client error '404' for url 'https://h.example/p?token=s3'\nsee https://docs.example/x"
    )
    cleaned = scrub(message)
    assert "s3" not in cleaned and "/p" not in cleaned and "https://h.example/…#" in cleaned
    assert scrub(cleaned) == cleaned  # redacting twice changes nothing
    assert "k3y" not in scrub("refused key k3y", ["k3y"])


PASSWORD = "hunter2-PASSWORD"


def test_redact_args_keeps_arguments_out_of_events_history_and_payloads(
    durable_redis_url, http_receiver, redis_client
):
    app = Celery("redact-args", broker=durable_redis_url, set_as_current=False)
    app.conf.update(
        durable_redis_url=durable_redis_url,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue="celery",
        durable_redact_args=True,
        durable_rules=[
            {
                "name": "retry logins",
                "trigger": {"event": "task.failed", "conditions": {"task_name_pattern": "login"}},
                "actions": [
                    {"type": "retry", "max_attempts": 1},
                    {
                        "type": "slack",
                        "webhook_url": f"{http_receiver.url}/slack",
                        "message": "{task_name}{task_args} failed",
                    },
                    {"type": "webhook", "url": f"{http_receiver.url}/hook"},
                ],
            }
        ],
    )
    ext = celery_durable.install(app)

    @app.task(name="login", shared=False)
    def login(password, *, user):
        redis_client.rpush("test:login", password)
        if redis_client.llen("test:login") == 1:
            raise ConnectionError("auth server down")

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        app.send_task("login", args=(PASSWORD,), kwargs={"user": "ann"})
        wait_until(lambda: redis_client.llen("test:login") == 2, what="the retry")
        wait_until(lambda: len(http_receiver.requests) == 2, what="slack and the webhook")
        wait_until(lambda: celery_durable.rule_history("retry logins", app=app), what="history")
    # The retry re-sent the real argument ...
    assert redis_client.lrange("test:login", 0, -1) == [PASSWORD.encode()] * 2
    # ... while the payloads, the history and the event stream hold a placeholder.
    slack, hook = sorted(http_receiver.requests, key=lambda r: r["path"])[::-1]
    assert slack["json"]["text"] == f"login{ARGS_PLACEHOLDER} failed"
    assert hook["json"]["event"]["data"]["args_repr"] == ARGS_PLACEHOLDER
    assert hook["json"]["event"]["data"]["kwargs_repr"] == ARGS_PLACEHOLDER
    (entry,) = celery_durable.rule_history("retry logins", app=app)
    assert entry["actions"][0]["ok"] is True  # the retry
    assert entry["event"]["data"]["message"]["body"] == ARGS_PLACEHOLDER
    for key in (ext.keys.events(), ext.keys.rule_history("retry logins")):
        stored = b"".join(v for _, f in redis_client.xrange(key) for v in f.values())
        assert stored and b"hunter2" not in stored and b"'ann'" not in stored, key
    assert "hunter2" not in str(entry)
    ext.redis.close()
    app.close()


def test_durable_redact_args_must_be_a_boolean():
    from celery_durable.errors import ConfigurationError
    from celery_durable.settings import Settings

    app = Celery("redact-setting", set_as_current=False)
    assert Settings.from_app(app).redact_args is False
    app.conf.durable_redact_args = "yes"
    with pytest.raises(ConfigurationError, match="durable_redact_args: expected true or false"):
        Settings.from_app(app)
