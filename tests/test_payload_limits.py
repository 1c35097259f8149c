"""Payload sizes: long error text is cut with a marker; oversized run data is refused."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable import FatalError, signals, step, wait_for_event, workflow
from celery_durable.codec import unpackb
from celery_durable.errors import ConfigurationError, EncodingError, PayloadTooLargeError
from celery_durable.extension import extension_for
from celery_durable.limits import bound_strings, marker, truncate_text
from celery_durable.settings import Settings
from tests.steps import echo
from tests.waiting import wait_until

BIG = 10_000_000  # the size of the error messages of issue 9
TEXT_LIMIT = 8192
PAYLOAD_LIMIT = 10_000


@step
def big_result() -> str:
    return "r" * (PAYLOAD_LIMIT * 2)


@step
def loud_failure() -> None:
    raise ValueError("y" * BIG)


@workflow(name="tests.limits.step_result")
def step_result_workflow() -> str:
    return big_result()


@workflow(name="tests.limits.workflow_result")
def workflow_result_workflow() -> str:
    return "w" * (PAYLOAD_LIMIT * 2)


@workflow(name="tests.limits.loud")
def loud_workflow() -> None:
    loud_failure()


@workflow(name="tests.limits.waits")
def waiting_workflow() -> Any:
    return wait_for_event("go")


# -- text truncation, as a function --------------------------------------------------------


def test_truncated_text_fits_the_limit_and_says_how_much_was_cut():
    text = "é" * 100_000  # two bytes each: the cut must not split one
    cut = truncate_text(text, 1000)
    assert len(cut.encode()) <= 1000
    kept = cut[: cut.index("…")]
    assert kept == "é" * len(kept) and len(kept) > 400
    assert cut == kept + marker(200_000 - 2 * len(kept))
    assert marker(9_991_234) == "… [truncated 9,991,234 bytes]"
    assert truncate_text("short", 1000) == "short"
    ends = truncate_text("HEAD" + "x" * 50_000 + "TAIL", 1000, keep="ends")
    assert ends.startswith("HEAD") and ends.endswith("TAIL") and len(ends.encode()) <= 1000


def test_bound_strings_returns_small_values_unchanged():
    small = {"a": ["x", b"y", 1, None], "b": {"c": "z"}}
    assert bound_strings(small, 100) is small
    bounded = bound_strings({"a": ["x" * 500, b"y" * 500]}, 300)
    assert all(len(v.encode()) <= 300 and "[truncated" in v for v in bounded["a"])


# -- error text in the journal and the global stream -------------------------------------


def test_a_ten_megabyte_error_is_journaled_cut_to_the_limit(
    durable_app, durable_worker, redis_client
):
    ext = extension_for(durable_app)
    run = celery_durable.start(loud_workflow)
    with pytest.raises(ValueError) as info:
        run.result(timeout=30)
    message = str(info.value)
    assert message.startswith("yyyy") and message.endswith("bytes]")
    assert "… [truncated 9,99" in message and len(message.encode()) <= TEXT_LIMIT
    for event in run.events():
        error = event["data"].get("error")
        if error:
            assert len(error["message"].encode()) <= TEXT_LIMIT
            assert len(error["traceback"].encode()) <= TEXT_LIMIT
            last_line = error["traceback"].splitlines()[-1]
            assert last_line.startswith("ValueError: yyy") and "[truncated 9,99" in last_line
            assert "loud_failure" in error["traceback"]  # the frames are kept
    assert redis_client.memory_usage(ext.keys.run_events(run.id)) < 100_000
    ext.activity_writer.flush()
    (failed,) = [
        unpackb(fields[b"e"])
        for _, fields in redis_client.xrange(ext.keys.events())
        if unpackb(fields[b"e"])["type"] == "workflow.failed"
    ]
    assert len(failed["data"]["error"]["message"].encode()) <= TEXT_LIMIT


# -- a plain task failing loudly under a matching rule ------------------------------------


class TestRulesSeeCutText:
    @pytest.fixture
    def durable_app_config(self, http_receiver) -> dict[str, Any]:
        return {
            "durable_rules": [
                {
                    "name": "loud",
                    "trigger": {
                        "event": "task.failed",
                        "conditions": {"task_name_pattern": "limits.loud"},
                    },
                    "actions": [
                        {"type": "webhook", "url": f"{http_receiver.url}/hook"},
                        {
                            "type": "slack",
                            "webhook_url": f"{http_receiver.url}/slack",
                            "message": "{error_message} {error_message} {error_message}",
                        },
                    ],
                }
            ]
        }

    def test_events_history_and_posts_stay_small(self, durable_app, http_receiver, redis_client):
        @durable_app.task(name="limits.loud", shared=False)
        def loud() -> None:
            raise ConnectionError("z" * BIG)

        ext = extension_for(durable_app)
        fired: list[Any] = []  # what the rules saw (and what the queued action job holds)

        def on_fired(sender: str, event: Any, **_: Any) -> None:
            fired.append(event)

        signals.rule_fired.connect(on_fired)
        with start_worker(durable_app, pool="solo", perform_ping_check=False):
            for _ in range(3):
                durable_app.send_task("limits.loud")
            posts = http_receiver.wait_for(6, timeout=30)
            wait_until(lambda: len(celery_durable.rule_history("loud")) == 3, what="history")
        signals.rule_fired.disconnect(on_fired)
        assert len(fired) == 3
        assert all(len(e.data["error_message"].encode()) <= TEXT_LIMIT for e in fired)
        assert all(len(e.data["traceback"].encode()) <= TEXT_LIMIT for e in fired)
        hook = [p for p in posts if p["path"] == "/hook"]
        slack = [p for p in posts if p["path"] == "/slack"]
        assert len(hook) == 3 and len(slack) == 3
        data = hook[0]["json"]["event"]["data"]
        assert (
            data["error_message"].startswith("zzz") and "[truncated 9,99" in data["error_message"]
        )
        assert len(data["error_message"].encode()) <= TEXT_LIMIT
        assert len(data["traceback"].encode()) <= TEXT_LIMIT
        assert len(slack[0]["json"]["text"].encode()) <= TEXT_LIMIT
        ext.activity_writer.flush()
        stream = redis_client.xrange(ext.keys.events())
        assert stream and all(len(fields[b"e"]) < 40_000 for _, fields in stream)
        history = redis_client.xrange(ext.keys.rule_history("loud"))
        assert len(history) == 3 and all(len(fields[b"h"]) < 60_000 for _, fields in history)
        # 75 MB in issue 9; now the whole database is a small fraction of one message.
        assert redis_client.info("memory")["used_memory"] < 10_000_000


# -- run data over durable_max_payload_bytes ----------------------------------------------


class TestPayloadLimit:
    @pytest.fixture
    def durable_app_config(self) -> dict[str, Any]:
        return {"durable_max_payload_bytes": PAYLOAD_LIMIT}

    @pytest.mark.parametrize(
        ("args", "kwargs", "message"),
        [
            (("a" * 20_000,), {}, r"start\(tests\.echo\): argument 0 is 20,00\d bytes encoded"),
            ((), {"doc": b"b" * 20_000}, r"keyword argument 'doc' is 20,00\d bytes encoded"),
            (("a" * 6_000, "b" * 6_000), {}, r"the arguments together is 12,0\d\d bytes"),
        ],
    )
    def test_start_refuses_oversized_arguments_and_writes_nothing(
        self, durable_app, redis_client, args, kwargs, message
    ):
        with pytest.raises(EncodingError, match=message) as info:
            celery_durable.start("tests.echo", *args, **kwargs)
        assert isinstance(info.value, PayloadTooLargeError)
        assert "over the limit of 10,000 (durable_max_payload_bytes)" in str(info.value)
        assert "pass a reference" in str(info.value)
        assert redis_client.dbsize() == 0

    def test_arguments_within_the_limit_are_kept_whole(self, durable_app, durable_worker):
        run = celery_durable.start(echo, "a" * 9_000)
        assert run.result(timeout=15) == ["a" * 9_000]

    def test_an_oversized_step_result_fails_the_step_by_name(self, durable_app, durable_worker):
        run = celery_durable.start(step_result_workflow)
        with pytest.raises(FatalError, match=r"the result of step '.*big_result' is 20,00\d bytes"):
            run.result(timeout=15)
        failed = [e for e in run.events() if e["type"] == "step.failed"]
        assert (
            len(failed) == 1
            and "durable_max_payload_bytes" in failed[0]["data"]["error"]["message"]
        )

    def test_an_oversized_workflow_result_fails_the_run(self, durable_app, durable_worker):
        run = celery_durable.start(workflow_result_workflow)
        with pytest.raises(EncodingError, match=r"the result of workflow .* is 20,00\d bytes"):
            run.result(timeout=15)
        assert run.status() == "failed"

    def test_send_event_refuses_an_oversized_payload(
        self, durable_app, durable_worker, durable_wait_for_status, redis_client
    ):
        run = celery_durable.start(waiting_workflow)
        durable_wait_for_status(run, "waiting")
        with pytest.raises(EncodingError, match=r"send_event\(.*'go'\): payload is 20,00\d bytes"):
            celery_durable.send_event(run.id, "go", {"blob": "c" * 20_000})
        assert not redis_client.exists(extension_for(durable_app).keys.run_inbox(run.id))
        celery_durable.send_event(run.id, "go", {"small": True})
        assert run.result(timeout=15) == {"small": True}


def test_the_limits_have_documented_defaults_and_refuse_bad_values():
    settings = Settings.from_app(Celery("defaults"))
    assert settings.max_text_bytes == 8192
    assert settings.max_payload_bytes == 1024 * 1024
    app = Celery("unlimited")
    app.conf.durable_max_payload_bytes = None
    assert Settings.from_app(app).max_payload_bytes is None
    for key, value in [
        ("durable_max_text_bytes", 10),
        ("durable_max_text_bytes", None),
        ("durable_max_payload_bytes", 0),
        ("durable_max_payload_bytes", "1MB"),
    ]:
        bad = Celery("bad")
        bad.conf[key] = value
        with pytest.raises(ConfigurationError, match=key):
            Settings.from_app(bad)
