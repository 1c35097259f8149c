"""A catastrophic `error_pattern` cannot wedge a worker (issue 9, item 9).

Under a backtracking engine, `(a+)+$` against `"a" * 40 + "!"` kept both pool
processes of a prefork worker at full CPU for minutes, served nothing else
and ignored SIGTERM. The pattern is now matched by RE2 on bounded text.
"""

from __future__ import annotations

import time

import pytest
from celery import Celery

from celery_durable.activity import Activity
from celery_durable.default_plugins.conditions import ErrorPattern
from celery_durable.rules.patterns import MATCH_TEXT_LIMIT
from tests.apps.redos import EVIL_PATTERN, HOOK_URL_ENV, OK_KEY
from tests.waiting import wait_until

SERVE_DEADLINE = 5.0  # seconds from sending a task to its completion


@pytest.mark.slow
def test_an_evil_pattern_on_an_evil_message_leaves_the_worker_serving(
    durable_worker_processes, durable_redis_url, redis_client, http_receiver
):
    durable_worker_processes.env[HOOK_URL_ENV] = f"{http_receiver.url}/evil"
    worker = durable_worker_processes.start(concurrency=2, app="tests.apps.redos")
    client = Celery("redos-client", broker=durable_redis_url, set_as_current=False)
    evil = "a" * 40 + "!"
    for message in (evil, evil, "a" * 1_000_000 + "!"):  # one for each pool process, and more
        client.send_task("redos.fail", args=(message,))
    sent = time.monotonic()
    client.send_task("redos.ok", args=("served",))
    wait_until(
        lambda: redis_client.lrange(OK_KEY, 0, -1) == [b"served"],
        timeout=SERVE_DEADLINE,
        what=lambda: f"a task served after the evil failures\n{worker.tail()}",
    )
    served_after = time.monotonic() - sent
    # The pattern still works: a message it matches fires the rule, and only that one.
    client.send_task("redos.fail", args=("aaaa",))

    def messages() -> list[str]:
        return [r["json"]["event"]["data"]["error_message"] for r in http_receiver.requests]

    wait_until(lambda: "aaaa" in messages(), timeout=SERVE_DEADLINE, what="the rule firing")
    assert messages() == ["aaaa"]
    # And the worker stops when asked to (it ignored SIGTERM while wedged).
    assert worker.stop(timeout=15) == 0
    client.close()
    print(f"next task served {served_after * 1000:.0f} ms after the evil failures were sent")


def test_the_pattern_sees_only_the_first_8_kb():
    event = Activity(
        "task.failed", {"error_type": "ValueError", "error_message": "a" * 10_000 + "b"}
    )
    assert not ErrorPattern("b").matches(event, None)
    assert not ErrorPattern("a$").matches(event, None)  # the cut is not an end
    assert ErrorPattern("^ValueError: a").matches(event, None)
    assert MATCH_TEXT_LIMIT == 8192


def test_an_evil_pattern_is_fast_on_a_long_evil_message():
    event = Activity("task.failed", {"error_type": "X", "error_message": "a" * 100_000 + "!"})
    began = time.perf_counter()
    assert not ErrorPattern(EVIL_PATTERN).matches(event, None)
    assert time.perf_counter() - began < 0.5


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=x)y", "(?<!x)y", "x" * 1001])
def test_what_re2_cannot_match_is_refused(pattern):
    with pytest.raises(ValueError, match="regular expression"):
        ErrorPattern(pattern)
