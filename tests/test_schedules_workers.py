"""Schedules on real `celery worker` processes: one run per tick, catch-up, pause, overlap.

Workers run `tests.apps.scheduled` (its `durable_schedule_grace` is 1 s).
Every assertion reads what the workers recorded: the schedule's history of
ticks and the runs themselves (their context names their tick).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

import celery_durable
from celery_durable import list_schedules, pause_schedule, resume_schedule, schedule
from celery_durable.extension import DurableExtension, extension_for
from celery_durable.schedules.store import schedule_store
from celery_durable.schedules.timing import to_datetime
from celery_durable.workflows.listing import list_runs
from tests.apps import client_side
from tests.apps import scheduled as scheduled_app
from tests.waiting import wait_until

WORKER_APP = "tests.apps.scheduled"  # for `durable_worker_processes`
pytestmark = pytest.mark.slow


@pytest.fixture
def ext(durable_redis_url: str) -> Iterator[DurableExtension]:
    """The test process's side of the workers' app, made current."""
    app: Celery = scheduled_app.make_app(durable_redis_url, main="schedules-tests-client")
    with client_side(app):
        yield extension_for(app)


def history(ext: DurableExtension, name: str) -> list[dict[str, Any]]:
    """The schedule's recorded ticks, oldest first."""
    return list(reversed(schedule_store(ext).history(name, 1000)))


def started(ext: DurableExtension, name: str) -> list[dict[str, Any]]:
    return [e for e in history(ext, name) if e["outcome"] == "started"]


def started_ticks(ext: DurableExtension, name: str) -> list[int]:
    return [e["tick"] for e in started(ext, name)]


def final_ts(run_id: str) -> float:
    return celery_durable.get_run(run_id).events()[-1]["ts"]


def test_two_workers_start_exactly_one_run_per_tick(ext, durable_worker_processes):
    """A 1 s decorator schedule for 10 s, two workers (one restarted half-way)."""
    workers = durable_worker_processes
    workers.env[scheduled_app.DECORATED_ENV] = "1"
    first, _ = workers.start_many(2, concurrency=1)
    name = "scheduled.every_second"
    (stored,) = list_schedules()  # stored by the starting workers, once
    assert (stored["name"], stored["source"], stored["when"]) == (name, "decorator", "every 1s")
    began = time.time()

    def ran_until(moment: float) -> bool:
        ticks = started_ticks(ext, name)
        return bool(ticks) and ticks[-1] >= moment * 1000

    wait_until(lambda: ran_until(began + 4), timeout=15, what="4 s of ticks")
    first.stop()  # a restart in the middle: its registration finds the schedule unchanged
    workers.start(concurrency=1)
    wait_until(lambda: ran_until(began + 10), timeout=30, what="10 s of ticks")
    workers.stop_all()

    entries = history(ext, name)
    ticks = [e["tick"] for e in entries]
    assert len(ticks) >= 10
    assert ticks == list(range(ticks[0], ticks[-1] + 1, 1000)), "a tick missing or repeated"
    assert {e["outcome"] for e in entries} == {"started"}
    assert not [e for e in entries if e.get("note")], "a tick was fired twice"
    runs = {e["run_id"] for e in entries}
    assert len(runs) == len(ticks)
    listed, _ = list_runs(workflow=name, limit=1000)
    assert {r["id"] for r in listed} == runs  # no run besides the ticks' own
    for entry in entries[:-2]:  # the last ones may not have run before the workers stopped
        result = celery_durable.get_run(entry["run_id"]).result(timeout=10)
        assert result["scheduled_at"] == to_datetime(entry["tick"])
        assert result["schedule"] == name


def test_ticks_missed_while_no_worker_ran_follow_the_catch_up_policy(ext, durable_worker_processes):
    workers = durable_worker_processes
    workers.start(concurrency=2)
    policies = ("latest", "all", "none")
    for policy in policies:
        schedule("scheduled.stamp", every="1s", name=f"catch-up-{policy}", catch_up=policy)
    wait_until(
        lambda: all(len(started_ticks(ext, f"catch-up-{p}")) >= 2 for p in policies),
        timeout=15,
        what="two ticks of each schedule",
    )
    workers.stop_all()
    before = {p: history(ext, f"catch-up-{p}") for p in policies}
    down = time.time()
    wait_until(lambda: time.time() >= down + 5, timeout=10, what="a 5 s outage")
    workers.start(concurrency=2)
    up = time.time()
    wait_until(
        lambda: all(started_ticks(ext, f"catch-up-{p}")[-1] > up * 1000 for p in policies),
        timeout=15,
        what="each schedule firing on time again",
    )
    workers.stop_all()

    for policy in policies:
        name = f"catch-up-{policy}"
        last_before = before[policy][-1]["tick"]
        after = history(ext, name)[len(before[policy]) :]
        back = after[0]["at"]  # when the first worker back fired it
        outage = list(range(last_before + 1000, math.floor(back) * 1000 + 1, 1000))
        assert len(outage) >= 4, (policy, outage)
        fired = [e["tick"] for e in after if e["outcome"] == "started" and e["tick"] in outage]
        missed = [e for e in after if e["outcome"] == "missed"]
        if policy == "all":
            assert fired == outage and not missed
        elif policy == "latest":
            assert fired == outage[-1:]
            assert [(m["tick"], m["count"]) for m in missed] == [(outage[0], len(outage) - 1)]
        else:  # none: nothing more than the grace (1 s) late ran
            late = [t for t in fired if back * 1000 - t > scheduled_app.GRACE * 1000]
            assert late == [] and len(fired) <= 1
            assert missed[0]["tick"] == outage[0]
            assert missed[0]["count"] == len(outage) - len(fired)
        # And on time again afterwards: every later tick ran once.
        later = [e["tick"] for e in after if e["tick"] > outage[-1]]
        assert later == list(range(outage[-1] + 1000, later[-1] + 1, 1000))


def test_a_paused_schedule_fires_nothing_until_resumed(ext, durable_worker_processes):
    durable_worker_processes.start(concurrency=1)
    schedule("scheduled.stamp", every="1s", name="pausable")
    wait_until(lambda: len(started_ticks(ext, "pausable")) >= 2, timeout=15, what="two ticks")

    pause_schedule("pausable")
    paused_at = time.time()
    (shown,) = list_schedules()
    assert (shown["status"], shown["next_at"]) == ("paused", None)
    wait_until(lambda: time.time() >= paused_at + 3, timeout=10, what="3 s paused")
    assert max(started_ticks(ext, "pausable")) <= paused_at * 1000

    resumed_at = time.time()
    shown = resume_schedule("pausable")
    assert shown["status"] == "active"
    assert resumed_at < shown["next_at"].timestamp() <= resumed_at + 1.01
    wait_until(
        lambda: started_ticks(ext, "pausable")[-1] > resumed_at * 1000,
        timeout=10,
        what="a tick after resuming",
    )
    ticks = started_ticks(ext, "pausable")
    assert not [t for t in ticks if paused_at * 1000 < t <= resumed_at * 1000]
    assert not [e for e in history(ext, "pausable") if e["outcome"] == "missed"]


def test_overlap_skip_skips_ticks_while_the_previous_run_is_unfinished(
    ext, durable_worker_processes
):
    durable_worker_processes.start(concurrency=2)
    # Each run sleeps (durably) 1.5 s: a tick a second finds every other one busy.
    schedule("scheduled.napper", every="1s", name="no-overlap", args=(1.5,), overlap="skip")
    wait_until(
        lambda: len(started_ticks(ext, "no-overlap")) >= 3,
        timeout=20,
        what="three runs of the schedule",
    )
    durable_worker_processes.stop_all()

    entries = history(ext, "no-overlap")
    ticks = [e["tick"] for e in entries]
    assert ticks == list(range(ticks[0], ticks[-1] + 1, 1000))  # each tick once, run or skipped
    skipped = [e for e in entries if e["outcome"] == "skipped"]
    assert skipped and {e["reason"] for e in skipped} == {"overlap"}
    runs = [e for e in entries if e["outcome"] == "started"]
    for entry in skipped:  # the run it waited for was still unfinished when it fired
        assert entry["run_id"] in {r["run_id"] for r in runs}
        assert final_ts(entry["run_id"]) > entry["at"]
    for previous, run in itertools.pairwise(runs):
        if celery_durable.get_run(previous["run_id"]).status() == "completed":
            created = celery_durable.get_run(run["run_id"]).events()[0]["ts"]
            assert created >= final_ts(previous["run_id"]), "two runs overlapped"
    (shown,) = list_schedules()
    assert shown["skipped"] == len(skipped) and shown["runs"] == len(runs)
