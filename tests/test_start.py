"""start(): idempotency, refusal of bad arguments, unknown workflows."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

import celery_durable
from celery_durable import EncodingError
from celery_durable.errors import ConfigurationError, RunNotFoundError
from celery_durable.extension import extension_for
from tests.steps import arithmetic


def test_same_idempotency_key_gives_the_same_run(durable_worker, counter):
    first = celery_durable.start(arithmetic, 1, 2, idempotency_key="order-1")
    second = arithmetic.start(9, 9, idempotency_key="order-1")
    assert second.id == first.id
    assert second.result(timeout=15)["total"] == 3
    other = celery_durable.start(arithmetic, 1, 2, idempotency_key="order-2")
    assert other.id != first.id
    other.result(timeout=15)
    assert counter("add") == 2


def test_twenty_threads_with_one_key_make_one_run_and_one_execution(
    durable_app, durable_worker, counter, redis_client
):
    barrier = threading.Barrier(20)
    ids: list[str] = []

    def starter() -> None:
        barrier.wait(timeout=10)
        ids.append(celery_durable.start(arithmetic, 4, 5, idempotency_key="same").id)

    threads = [threading.Thread(target=starter) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(ids) == 20 and len(set(ids)) == 1
    run = celery_durable.get_run(ids[0])
    assert run.result(timeout=15)["total"] == 9
    types = [e["type"] for e in run.events()]
    assert types.count("workflow.started") == 1
    assert types.count("workflow.executing") == 1
    assert counter("add") == 1
    keys = extension_for(durable_app).keys
    assert redis_client.zcard(keys.runs_index()) == 1


def _nested(depth: int) -> list:
    """A list in a list ... `depth` lists deep, built without recursion."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((object(),), {}, r"argument 0: a value of type builtins.object cannot be recorded"),
        ((1, {"when": dt.datetime(2026, 1, 1)}), {}, r"argument 1\['when'\]: naive datetime"),
        (
            (),
            {"items": [1, {2, 3}]},
            r"keyword argument 'items'\[1\]: a value of type builtins\.set",
        ),
        ((2**70,), {}, r"argument 0: integer .* too large"),
        (({(1, 2): 3},), {}, r"argument 0 key \(1, 2\): a dict key of type tuple cannot"),
        (
            (),
            {"order": {"lines": [{"ok": 1}, {None: 2}]}},
            r"keyword argument 'order'\['lines'\]\[1\] key None: a dict key of type NoneType",
        ),
        ((_nested(100_000),), {}, r"argument 0: nested more than 100 levels deep"),
        ((_nested(101),), {}, r"argument 0: nested more than 100 levels deep"),
    ],
)
def test_arguments_that_cannot_be_recorded_are_refused_and_nothing_is_written(
    durable_app, redis_client, args, kwargs, message
):
    with pytest.raises(EncodingError, match=message):
        celery_durable.start(arithmetic, *args, **kwargs)
    assert redis_client.dbsize() == 0  # no journal entry, no message sent


def test_values_at_the_limits_are_accepted_and_read_back(durable_app):
    """100 levels of nesting, int and str keys: the run can be read back."""
    deep, keys = _nested(100), {1: "one", "two": 2}
    run = celery_durable.start("tests.echo", deep, keys)
    (started,) = [e for e in run.events() if e["type"] == "workflow.started"]
    assert started["data"]["args"] == [deep, keys]


def test_tz_aware_datetimes_and_bytes_are_accepted(durable_app):
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    run = celery_durable.start("tests.echo", when, b"\x00raw")
    (started,) = [e for e in run.events() if e["type"] == "workflow.started"]
    assert started["data"]["args"] == [when, b"\x00raw"]


def test_bad_idempotency_key_is_refused(durable_app):
    with pytest.raises(ConfigurationError, match="idempotency_key must be a non-empty string"):
        celery_durable.start(arithmetic, 1, 2, idempotency_key=42)


def test_start_refuses_what_is_not_a_workflow(durable_app):
    with pytest.raises(ConfigurationError, match="takes a @workflow function"):
        celery_durable.start(print, 1)


def test_unknown_workflow_blocks_that_run_and_the_worker_keeps_serving(
    durable_worker, durable_wait_for_status
):
    """Another worker, or the next deploy, may have its code: blocked, not failed."""
    unknown = celery_durable.start("no.such.workflow", 1)
    durable_wait_for_status(unknown, "blocked", timeout=15)
    error = unknown.events()[-1]["data"]["error"]
    assert error["type"].endswith("WorkflowNotFoundError")
    assert "'no.such.workflow' is not" in error["message"]
    assert celery_durable.start(arithmetic, 1, 1).result(timeout=15)["total"] == 2


def test_get_run_of_an_unknown_id_is_a_clear_error(durable_app):
    with pytest.raises(RunNotFoundError, match="no run with id 'nope'"):
        celery_durable.get_run("nope")


def test_start_without_install_says_how_to_fix_it():
    from celery import Celery

    from celery_durable import extension

    saved = dict(extension._extensions)
    extension._extensions.clear()
    try:
        Celery("bare", set_as_current=True)
        with pytest.raises(celery_durable.errors.NotInstalledError, match="install"):
            celery_durable.start(arithmetic, 1, 2)
    finally:
        extension._extensions.update(saved)


@pytest.fixture
def other_app(durable_redis_url):
    """A second installed app on the same Redis, with its own journal, not current."""
    from celery import Celery

    app = Celery("other-journal", broker=durable_redis_url, set_as_current=False)
    app.conf.update(durable_redis_url=durable_redis_url, durable_key_prefix="other")
    celery_durable.install(app)
    yield app
    extension_for(app).redis.close()
    app.close()


def test_every_run_function_takes_app_to_name_the_journal(durable_app, other_app):
    from celery_durable.workflows.control import cancel_run

    run = celery_durable.start(arithmetic, 1, 2, idempotency_key="k", app=other_app)
    assert arithmetic.start(1, 2, idempotency_key="k", app=other_app) == run
    assert celery_durable.get_run(run.id, app=other_app).status() == "pending"
    with pytest.raises(RunNotFoundError):  # the current app's journal has no such run
        celery_durable.get_run(run.id)
    celery_durable.send_event(run.id, "approval", {"ok": True}, app=other_app)
    with pytest.raises(RunNotFoundError):
        celery_durable.send_event(run.id, "approval")
    with pytest.raises(RunNotFoundError):
        cancel_run(run.id)
    assert cancel_run(run.id, app=other_app) is True
    assert run.status() == "cancelled"  # a handle keeps the app it was made with
    assert cancel_run(run.id, app=other_app) is False
    mine = celery_durable.start(arithmetic, 1, 2, idempotency_key="k")  # the current app
    assert mine.id == run.id and mine.status() == "pending"


def test_app_must_be_a_celery_app(durable_app):
    with pytest.raises(ConfigurationError, match="app= takes the Celery app"):
        celery_durable.start(arithmetic, 1, 2, app="shop")
    with pytest.raises(ConfigurationError, match="app= takes the Celery app"):
        celery_durable.get_run("x", app=object())
