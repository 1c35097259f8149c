"""The Celery app: one Redis for the broker and the journal, durable installed.

The Redis URL comes from the environment (`DURABLE_REDIS_URL`, else
`REDIS_URL`), so that the worker and every process that starts runs agree on
it without a config file. So does the Slack webhook of the automation rules
(`DEMO_SLACK_URL`), which `rules.yaml` names as `${DEMO_SLACK_URL}`.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import redis
from celery import Celery
from kombu import Queue

import celery_durable

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
RULES_PATH = Path(__file__).with_name("rules.yaml")
# Where the Slack rule posts when DEMO_SLACK_URL is not set: nothing listens
# there, so the rule's history records a failed post and the worker goes on.
DEFAULT_SLACK_URL = "http://127.0.0.1:9/slack"


def redis_url_from_env() -> str:
    """`DURABLE_REDIS_URL`, else `REDIS_URL`, else a local Redis."""
    return os.environ.get("DURABLE_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


app = Celery("example_project", include=["example_project.workflows", "example_project.tasks"])
app.conf.update(
    # A workflow task holds its pool slot while its steps run inline: prefetch
    # one message at a time so a busy child does not sit on runs another could take.
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # Emails go through their own queue (a worker consumes every queue listed
    # here unless told otherwise with -Q); the retry rule matches on it.
    task_queues=[Queue("celery"), Queue("email")],
    task_routes={"example_project.tasks.send_receipt_email": {"queue": "email"}},
    # The shop's own plugin, which adds the `audit_log` action to the rules.
    durable_plugins=["example_project.plugins"],
)
celery_durable.install(app)


def use_redis(url: str) -> None:
    """Point the broker and the journal at `url`; call before the app is used.

    A process that decides its Redis after importing the app (the demo, which
    may start a private redis-server) calls this; the worker never needs to.
    """
    app.conf.update(broker_url=url, durable_redis_url=url)


def use_slack_url(url: str) -> None:
    """Where the Slack rule posts; call before the rules load (before the app is used).

    `rules.yaml` says `webhook_url: "${DEMO_SLACK_URL}"`: celery_durable fills
    `${NAME}` from the environment when it loads a rule file.
    """
    os.environ["DEMO_SLACK_URL"] = url


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def shop_redis() -> redis.Redis:
    """A client of the app's Redis, for the shop's own keys (sent mail, audit log).

    redis-py reconnects after a fork, so one client serves every pool process.
    """
    return _client(app.conf.broker_url)


use_redis(redis_url_from_env())
os.environ.setdefault("DEMO_SLACK_URL", DEFAULT_SLACK_URL)
app.conf.durable_rules = str(RULES_PATH)
