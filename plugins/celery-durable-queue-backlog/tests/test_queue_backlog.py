"""The queue.backlog trigger: its checks at rule load, its broker reads, a real worker polling.

Needs nothing but the package installed: the `durable_*` fixtures come from
celery_durable's pytest plugin (a private redis-server on a free port, which
is also the broker), and its local HTTP receiver gets the rule's webhook.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery
from celery_durable import RulesError, signals
from celery_durable.activity import Activity
from celery_durable.contrib.http_receiver import HttpReceiver
from celery_durable.extension import extension_for
from celery_durable.rules.loader import load_rules
from celery_durable.worker.rules import TriggerPolling

from celery_durable_queue_backlog import QueueBacklog, queue_lengths


def send_messages(app: Celery, queue: str, count: int, **options: Any) -> None:
    for n in range(count):
        app.send_task("nobody.consumes.this", args=(n,), queue=queue, **options)


# -- checks at rule load --------------------------------------------------------------


def rule(**trigger: Any) -> dict[str, Any]:
    return {
        "name": "Backlog",
        "trigger": {"event": "queue.backlog", **trigger},
        "action": {"type": "webhook", "url": "http://127.0.0.1:9/hook"},
    }


def test_the_entry_point_registers_the_trigger(durable_rule_parts):
    assert durable_rule_parts.triggers["queue.backlog"] is QueueBacklog
    (loaded,) = load_rules([rule(queues=["a", "b", "a"], threshold=10)], durable_rule_parts)
    trigger = loaded.trigger
    assert (trigger.queues, trigger.threshold, trigger.poll_interval) == (["a", "b"], 10, 5.0)
    (loaded,) = load_rules(
        [rule(queues=["a"], threshold=1, interval_seconds=0.25)], durable_rule_parts
    )
    assert loaded.trigger.poll_interval == 0.25
    assert QueueBacklog.poll_interval == 5.0  # the class default is untouched


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ({"threshold": 5}, "trigger: missing parameter(s) 'queues'"),
        ({"queues": ["a"]}, "trigger: missing parameter(s) 'threshold'"),
        ({"queues": "a", "threshold": 5}, "trigger.queues: expected list, got 'a'"),
        ({"queues": [], "threshold": 5}, "trigger: queues must name at least one queue"),
        ({"queues": ["a", 3], "threshold": 5}, "queues must be a list of queue names"),
        ({"queues": ["a"], "threshold": 0}, "trigger: threshold must be >= 1, got 0"),
        ({"queues": ["a"], "threshold": 2.5}, "trigger.threshold: expected int, got 2.5"),
        ({"queues": ["a"], "threshold": 5, "interval_seconds": 0}, "interval_seconds must be > 0"),
        ({"queues": ["a"], "threshold": 5, "queue": "a"}, "unknown parameter(s) 'queue'"),
    ],
)
def test_bad_parameters_are_refused_naming_the_rule_and_field(
    durable_rule_parts, trigger, expected
):
    with pytest.raises(RulesError) as info:
        load_rules([rule(**trigger)], durable_rule_parts)
    (problem,) = info.value.problems
    assert problem.startswith("rule 'Backlog' (#1): ")
    assert expected in problem


def test_matches_only_its_queues_at_its_threshold():
    trigger = QueueBacklog(queues=["a", "b"], threshold=5)

    def event(**data: Any) -> Activity:
        return Activity(type="queue.backlog", data=data)

    assert trigger.matches(event(queue="a", length=5, threshold=5))
    assert trigger.matches(event(queue="b", length=50, threshold=10))  # another rule's poll
    assert not trigger.matches(event(queue="b", length=4, threshold=2))
    assert not trigger.matches(event(queue="c", length=50, threshold=5))
    assert not trigger.matches(Activity(type="task.failed", data={"queue": "a", "length": 9}))


# -- reading the broker -----------------------------------------------------------------


def test_queue_lengths_counts_waiting_messages_with_their_priorities(durable_app):
    send_messages(durable_app, "plain", 3)
    send_messages(durable_app, "urgent", 2)
    send_messages(durable_app, "urgent", 4, priority=9)  # a Redis priority sub-list
    assert queue_lengths(durable_app, ["plain", "urgent", "never.used", "plain"]) == {
        "plain": 3,
        "urgent": 6,
        "never.used": 0,  # no such queue: no backlog, and it is not created
    }


@pytest.mark.parametrize(
    "durable_app_config", [{"broker_transport_options": {"global_keyprefix": "tenant-a:"}}]
)
def test_queue_lengths_under_a_global_keyprefix(durable_app, durable_redis_url):
    send_messages(durable_app, "prefixed", 3)
    client = redis.Redis.from_url(durable_redis_url)
    try:
        assert client.llen("tenant-a:prefixed") == 3
        keys = set(client.keys())
        assert queue_lengths(durable_app, ["prefixed", "never.used"]) == {
            "prefixed": 3,
            "never.used": 0,
        }
        assert set(client.keys()) == keys  # nothing was created
    finally:
        client.close()


def test_poll_yields_the_queues_at_or_over_the_threshold(durable_app):
    send_messages(durable_app, "q.over", 6)
    send_messages(durable_app, "q.at", 5)
    send_messages(durable_app, "q.under", 4)
    trigger = QueueBacklog(queues=["q.under", "q.at", "q.over", "q.empty"], threshold=5)
    context = SimpleNamespace(app=durable_app)
    assert list(trigger.poll(context)) == [
        {"queue": "q.at", "length": 5, "threshold": 5},
        {"queue": "q.over", "length": 6, "threshold": 5},
    ]


# -- integration: a worker polls, the rule fires ----------------------------------------

RULE = "Backlogged queue"


@pytest.fixture
def durable_app_config(durable_http_receiver: HttpReceiver) -> dict[str, Any]:
    return {
        "durable_rules": [
            {
                "name": RULE,
                "trigger": {
                    "event": "queue.backlog",
                    "queues": ["backlogged", "quiet"],
                    "threshold": 5,
                    "interval_seconds": 0.5,
                },
                "action": {
                    "type": "webhook",
                    "url": f"{durable_http_receiver.url}/hook",
                    "retries": 0,
                },
            }
        ]
    }


@pytest.fixture
def fired() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def record(sender: str, event: Activity, execution_id: str, **_: Any) -> None:
        seen.append({"rule": sender, "type": event.type, "data": dict(event.data)})

    signals.rule_fired.connect(record)
    yield seen
    signals.rule_fired.disconnect(record)


def test_a_backlog_fires_the_rule(durable_app, durable_worker, durable_http_receiver, fired):
    # The in-process worker consumes "celery" only (the queues it knew when it
    # started): messages sent to "backlogged" and "quiet" now stay there.
    send_messages(durable_app, "backlogged", 7)
    send_messages(durable_app, "quiet", 2)

    post, *_ = durable_http_receiver.wait_for(1, timeout=15)

    first = post["json"]
    assert post["path"] == "/hook"
    assert first["rule"] == RULE
    assert first["event"]["type"] == "queue.backlog"
    expected = {"queue": "backlogged", "length": 7, "threshold": 5, "polled_by": RULE}
    assert first["event"]["data"] == expected
    assert fired[0] == {"rule": RULE, "type": "queue.backlog", "data": expected}
    # It polls every interval_seconds and fires while the backlog lasts; never for "quiet".
    durable_http_receiver.wait_for(2, timeout=5)
    assert {e["data"]["queue"] for e in fired} == {"backlogged"}
    (polled,) = TriggerPolling(extension_for(durable_app)).rules
    assert polled.trigger.poll_interval == 0.5
    assert queue_lengths(durable_app, ["backlogged", "quiet"]) == {"backlogged": 7, "quiet": 2}


# -- a limitation of celery_durable's poller, pinned down ------------------------------


@pytest.mark.parametrize(
    "durable_app_config",
    [
        {
            "durable_rules": [
                {
                    "name": name,
                    "trigger": {
                        "event": "queue.backlog",
                        "queues": [queue],
                        "threshold": 1,
                        "interval_seconds": 0.3,
                    },
                    "action": {"type": "webhook", "url": "http://127.0.0.1:9/hook", "retries": 0},
                }
                for name, queue in (("First", "first.q"), ("Second", "second.q"))
            ]
        }
    ],
)
def test_each_rule_polls_its_own_queues(durable_app, durable_worker, fired):
    send_messages(durable_app, "first.q", 1)
    send_messages(durable_app, "second.q", 1)
    deadline = time.monotonic() + 10
    while sum(f["rule"] == "First" for f in fired) < 3:  # three polls done
        assert time.monotonic() < deadline, f"the first rule did not fire: {fired}"
        time.sleep(0.05)
    assert {(f["rule"], f["data"]["queue"]) for f in fired} == {
        ("First", "first.q"),
        ("Second", "second.q"),
    }
