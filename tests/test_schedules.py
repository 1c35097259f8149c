"""Schedules: definitions refused early, ticks in time zones, fast-forwarded firing.

The real-worker behaviour (several workers, restarts, catch-up, overlap,
pause) is in tests/test_schedules_workers.py; this module uses an in-process
worker and the durable clock.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable import (
    ScheduleError,
    ScheduleNotFoundError,
    Workflow,
    get_context,
    list_schedules,
    schedule,
    workflow,
)
from celery_durable.extension import extension_for
from celery_durable.schedules.firing import ROUND, tick_key
from celery_durable.schedules.registration import register_workflow_schedules
from celery_durable.schedules.store import schedule_store
from celery_durable.schedules.timing import make_timing, to_datetime
from celery_durable.workflows import registry
from tests.test_redis_topologies import cluster  # noqa: F401 - the fixture, by name
from tests.waiting import wait_until

PRAGUE = ZoneInfo("Europe/Prague")


@workflow(name="tests.schedules.report")
def report(label: str = "") -> dict:
    ctx = get_context()
    return {"label": label, "scheduled_at": ctx.scheduled_at, "schedule": ctx.schedule}


def _ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def _local(ms: int) -> str:
    return to_datetime(ms).astimezone(PRAGUE).strftime("%m-%d %H:%M %Z")


# -- refused at definition ------------------------------------------------------------


def test_a_bad_cron_string_is_refused_where_the_workflow_is_defined():
    with pytest.raises(ScheduleError) as caught:

        @workflow(name="tests.schedules.bad", schedule="61 * * * *")
        def bad() -> None: ...

    message = str(caught.value)
    assert message.startswith("workflow 'tests.schedules.bad': schedule: cron '61 * * * *'")
    assert "Bad minute" in message and "minute hour day-of-month month day-of-week" in message
    assert "tests.schedules.bad" not in registry.registered()  # nothing half-defined

    with pytest.raises(ScheduleError, match="timezone 'Europe/Pragu' is not in the timezone"):

        @workflow(name="tests.schedules.bad_zone", schedule="0 2 * * *", timezone="Europe/Pragu")
        def bad_zone() -> None: ...

    with pytest.raises(ScheduleError, match="timezone='UTC' needs schedule="):

        @workflow(name="tests.schedules.zone_only", timezone="UTC")
        def zone_only() -> None: ...


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "0 2 * *"}, "cron '0 2 * *' is not a valid cron expression (Wrong number"),
        ({"cron": "0 2 30 2 *"}, "(Bad day-of-month)"),
        ({"cron": "@often"}, "'@often' is not a known nickname"),
        ({"every": "0.5s"}, "every='0.5s' is shorter than the minimum of 1s"),
        ({"every": "soon"}, "'soon' is not a duration"),
        ({}, "give either cron= or every="),
        ({"cron": "* * * * *", "every": 60}, "give either cron= or every="),
        ({"every": 60, "catch_up": "some"}, "catch_up must be one of latest, all, none"),
        ({"every": 60, "overlap": "queue"}, "overlap must be one of allow, skip"),
        ({"every": 60, "end_at": 1.0}, "end_at is in the past"),
        ({"every": 60, "start_at": 2e9, "end_at": 1.9e9}, "end_at must be after start_at"),
        ({"every": 60, "args": (object(),)}, "argument 0"),
    ],
)
def test_schedule_refuses_a_bad_definition_and_writes_nothing(
    durable_app, redis_client, options, message
):
    with pytest.raises(celery_durable.DurableError) as caught:
        schedule(report, name="nightly", **options)
    assert "schedule 'nightly'" in str(caught.value)
    assert message in str(caught.value)
    assert redis_client.keys("durable:*") == []


# -- when ticks fall ----------------------------------------------------------------------


def test_cron_ticks_follow_the_timezone_across_dst_changes():
    daily = make_timing(cron="30 2 * * *", timezone="Europe/Prague", where="t")
    # 2025-03-30: 02:00 -> 03:00 (02:30 does not exist): it runs right after the jump.
    spring = daily.upcoming(_ms("2025-03-29T00:00:00+00:00"), 3)
    assert [_local(t) for t in spring] == [
        "03-29 02:30 CET",
        "03-30 03:00 CEST",
        "03-31 02:30 CEST",
    ]
    # 2025-10-26: 03:00 -> 02:00 (02:30 happens twice): it runs once, the first time.
    autumn = daily.upcoming(_ms("2025-10-25T00:00:00+00:00"), 3)
    assert [_local(t) for t in autumn] == [
        "10-25 02:30 CEST",
        "10-26 02:30 CEST",
        "10-27 02:30 CET",
    ]
    # A wildcard job keeps even intervals of real time through the repeated hour.
    quarter = make_timing(cron="*/30 * * * *", timezone="Europe/Prague", where="t")
    ticks = quarter.upcoming(_ms("2025-10-26T00:00:00+00:00"), 4)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [1_800_000] * 3
    # Ticks before a moment, oldest first; an interval counts from the epoch.
    assert quarter.latest(ticks[-1], 2) == ticks[-2:]
    every = make_timing(every="1h", where="t")
    assert every.next_after(_ms("2025-01-01T10:20:00+00:00")) == _ms("2025-01-01T11:00:00+00:00")
    assert every.describe() == "every 1h" and daily.describe() == "cron 30 2 * * * (Europe/Prague)"


# -- fast-forwarded on an in-process worker --------------------------------------------------


def _started(ext, name: str) -> list[dict]:
    entries = reversed(schedule_store(ext).history(name, 100))
    return [e for e in entries if e["outcome"] == "started"]


def test_the_time_skip_fixture_fast_forwards_schedules(
    durable_app, durable_worker, durable_time_skip
):
    ext = extension_for(durable_app)
    plain = celery_durable.start(report, "plain")
    assert plain.result(timeout=10)["scheduled_at"] is None  # an unscheduled run has no tick

    listed = schedule(report, every="1h", name="hourly", args=("h",))
    first_tick = listed["next_at"]
    assert first_tick > dt.datetime.now(dt.UTC) and first_tick.minute == first_tick.second == 0
    assert durable_time_skip.advance() > 0  # to the next due timer: the schedule's tick
    wait_until(lambda: len(_started(ext, "hourly")) == 1, timeout=10, what="the first tick's run")
    run = celery_durable.get_run(_started(ext, "hourly")[0]["run_id"])
    assert run.result(timeout=10) == {
        "label": "h",
        "scheduled_at": first_tick,
        "schedule": "hourly",
    }
    assert run.events()[0]["data"]["idempotency_key"] == tick_key("hourly", _tick(first_tick))

    # Five hours at once: catch_up="latest" runs the last of them and records the rest missed.
    durable_time_skip.advance("5h")
    wait_until(lambda: len(_started(ext, "hourly")) == 2, timeout=10, what="the caught-up run")
    latest = celery_durable.get_run(_started(ext, "hourly")[1]["run_id"]).result(timeout=10)
    assert latest["scheduled_at"] == first_tick + dt.timedelta(hours=5)
    (shown,) = list_schedules()
    assert (shown["runs"], shown["missed"]) == (2, 4)
    assert shown["next_at"] == first_tick + dt.timedelta(hours=6)


def test_catch_up_all_runs_every_missed_tick_once(durable_app, durable_worker, durable_time_skip):
    ext = extension_for(durable_app)
    listed = schedule(report, every="1m", name="every-minute", catch_up="all")
    durable_time_skip.advance(listed["next_at"].timestamp() - ext.clock.now() + 4 * 60)
    wait_until(lambda: len(_started(ext, "every-minute")) == 5, timeout=10, what="five runs")
    ticks = [
        celery_durable.get_run(e["run_id"]).result(timeout=10)["scheduled_at"]
        for e in _started(ext, "every-minute")
    ]
    assert ticks == [listed["next_at"] + dt.timedelta(minutes=i) for i in range(5)]
    assert list_schedules()[0]["missed"] == 0


def test_a_burst_of_schedules_on_one_tick_fires_each_once(
    durable_app, durable_worker, durable_time_skip
):
    """More schedules on one tick than a poller fires per round (the rest goes back)."""
    ext = extension_for(durable_app)
    names = [f"burst-{i:02d}" for i in range(2 * ROUND + 5)]
    for name in names:
        schedule(report, every="1h", name=name)
    durable_time_skip.advance()
    wait_until(
        lambda: all(_started(ext, name) for name in names), timeout=20, what="every schedule"
    )
    tick = list_schedules()[0]["last_tick"]
    assert {s["last_tick"] for s in list_schedules()} == {tick}
    assert [len(_started(ext, name)) for name in names] == [1] * len(names)
    assert ext.redis.zcard(ext.keys.runs_index()) == len(names)


def _tick(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


# -- the decorator's schedules, stored by a starting worker ----------------------------------


@pytest.fixture
def decorated() -> Iterator[list[str]]:
    """Workflows defined here with schedule= leave the process registry afterwards,
    so no later test's worker stores their schedules."""
    names: list[str] = []
    yield names
    for name in names:
        registry._registry.pop(name, None)


def _nightly(schedule: str | None = None, timezone: str | None = None) -> object:
    """The workflow `tests.schedules.nightly` as one version of the code defines it."""

    def nightly() -> None: ...

    return workflow(name="tests.schedules.nightly", schedule=schedule, timezone=timezone)(nightly)


def test_a_starting_worker_stores_decorator_schedules_idempotently(durable_app, decorated):
    ext = extension_for(durable_app)
    decorated.append("tests.schedules.nightly")
    _nightly("0 2 * * *", "Europe/Prague")

    assert register_workflow_schedules(ext) == 1
    (stored,) = list_schedules()
    assert (stored["name"], stored["source"], stored["when"]) == (
        "tests.schedules.nightly",
        "decorator",
        "cron 0 2 * * * (Europe/Prague)",
    )
    assert stored["next_at"].astimezone(PRAGUE).hour == 2
    timer = ext.redis.zscore(ext.keys.timers(), "schedule:tests.schedules.nightly")
    assert timer == stored["next_at"].timestamp()

    ext.clock.advance(3 * 86400)  # a restart days later keeps the stored (now due) tick
    register_workflow_schedules(ext)
    assert list_schedules()[0]["next_at"] == stored["next_at"]

    # New code with another cron for the same workflow: the definition is replaced.
    _nightly("0 3 * * *", "Europe/Prague")

    register_workflow_schedules(ext)
    assert list_schedules()[0]["when"] == "cron 0 3 * * * (Europe/Prague)"

    # A runtime schedule owns its name: the decorator's is not written over it.
    schedule(report, every="1h", name="tests.schedules.nightly")
    register_workflow_schedules(ext)
    assert list_schedules()[0]["source"] == "runtime"
    celery_durable.delete_schedule("tests.schedules.nightly")

    # New code without schedule=: the stored decorator schedule goes.
    register_workflow_schedules(ext)
    assert list_schedules()[0]["source"] == "decorator"

    _nightly()

    register_workflow_schedules(ext)
    assert list_schedules() == []
    assert ext.redis.zscore(ext.keys.timers(), "schedule:tests.schedules.nightly") is None


def test_the_class_form_takes_schedule_and_timezone(decorated):
    decorated.append("tests.schedules.weekly")

    class Weekly(Workflow):
        name = "tests.schedules.weekly"
        schedule = "0 9 * * MON"
        timezone = "America/New_York"

        def run(self) -> None: ...

    assert Weekly.definition.schedule.describe() == "cron 0 9 * * MON (America/New_York)"
    with pytest.raises(ScheduleError, match=r"workflow 'tests\.schedules\.bad_class': schedule"):

        class BadClass(Workflow):
            name = "tests.schedules.bad_class"
            schedule = "0 9 * * FUNDAY"

            def run(self) -> None: ...


def test_operations_on_an_unknown_schedule_name_it(durable_app):
    for operation in (
        celery_durable.pause_schedule,
        celery_durable.resume_schedule,
        celery_durable.delete_schedule,
        celery_durable.trigger_schedule,
        celery_durable.describe_schedule,
    ):
        with pytest.raises(ScheduleNotFoundError, match="no schedule named 'ghost'"):
            operation("ghost")


# -- on a Redis Cluster ----------------------------------------------------------------------


def test_schedules_fire_on_a_redis_cluster(request, durable_redis_url):
    """A schedule's keys share a slot; the names, timers and runs are elsewhere."""
    ports = request.getfixturevalue("cluster")
    app = Celery("cluster-schedules", broker=durable_redis_url, set_as_current=True)
    app.conf.update(
        durable_redis_url=f"redis://127.0.0.1:{ports[0]}/0",
        durable_redis_cluster=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    ext = celery_durable.install(app)
    with start_worker(app, pool="solo", perform_ping_check=False):
        schedule(report, every="1s", name="on-cluster", args=("c",), overlap="skip")
        wait_until(lambda: len(_started(ext, "on-cluster")) >= 2, timeout=15, what="two ticks")
        celery_durable.pause_schedule("on-cluster")
        (run_id, *_) = [e["run_id"] for e in _started(ext, "on-cluster")]
        assert celery_durable.get_run(run_id).result(timeout=10)["label"] == "c"
        assert celery_durable.trigger_schedule("on-cluster").result(timeout=10)["label"] == "c"
        celery_durable.delete_schedule("on-cluster")
    assert list_schedules() == []
