"""Retention: a finished run's keys expire, and nothing else grows without end."""

from __future__ import annotations

import time
from typing import Any

import pytest
from celery import Celery

import celery_durable
from celery_durable.errors import ConfigurationError
from celery_durable.extension import extension_for
from celery_durable.journal import Journal
from celery_durable.journal.journal import Notification
from celery_durable.keys import Keys
from celery_durable.retention import BATCH, RetentionSweep
from celery_durable.settings import Settings
from celery_durable.workflows.listing import list_runs
from tests.steps import arithmetic
from tests.waiting import wait_until

RETENTION = 2.0


def run_keys(client: Any, prefix: str = "durable") -> list[bytes]:
    return sorted(client.scan_iter(match=f"{prefix}:run:*"))


class TestFinishedRunsExpire:
    @pytest.fixture
    def durable_app_config(self) -> dict[str, Any]:
        return {"durable_retention": RETENTION}

    def test_a_finished_run_disappears_after_the_retention(
        self, durable_app, durable_worker, redis_client
    ):
        ext = extension_for(durable_app)
        runs = [celery_durable.start(arithmetic, n, 1) for n in range(5)]
        for run in runs:
            assert run.result(timeout=15)["total"] >= 1
        for run in runs:
            for key in (ext.keys.run_events(run.id), ext.keys.run_meta(run.id)):
                assert 0 < redis_client.pttl(key) <= RETENTION * 1000, key
        assert {r["id"] for r in list_runs(app=durable_app)[0]} == {r.id for r in runs}
        assert redis_client.zcard(ext.keys.finished_runs()) == 5

        wait_until(lambda: not run_keys(redis_client), timeout=15, what="run keys expire")
        wait_until(
            lambda: redis_client.zcard(ext.keys.runs_index()) == 0,
            timeout=15,
            what="the sweep takes the runs off the index",
        )
        assert redis_client.zcard(ext.keys.finished_runs()) == 0
        assert list_runs(app=durable_app) == ([], None)

    def test_the_idempotency_key_is_forgotten_with_the_run(self, durable_app, durable_worker):
        first = celery_durable.start(arithmetic, 1, 2, idempotency_key="k")
        assert first.result(timeout=15)["total"] == 3
        again = celery_durable.start(arithmetic, 5, 5, idempotency_key="k")
        assert again.id == first.id and again.result(timeout=15)["total"] == 3  # still kept
        wait_until(
            lambda: extension_for(durable_app).journal.status(first.id) is None,
            timeout=15,
            what="the run expires",
        )
        renewed = celery_durable.start(arithmetic, 5, 5, idempotency_key="k")
        assert renewed.result(timeout=15)["total"] == 10


class TestKeptForever:
    @pytest.fixture
    def durable_app_config(self) -> dict[str, Any]:
        return {"durable_retention": None}

    def test_retention_none_keeps_finished_runs(self, durable_app, durable_worker, redis_client):
        ext = extension_for(durable_app)
        run = celery_durable.start(arithmetic, 1, 1)
        run.result(timeout=15)
        assert redis_client.pttl(ext.keys.run_events(run.id)) == -1
        assert redis_client.pttl(ext.keys.run_meta(run.id)) == -1
        assert not redis_client.exists(ext.keys.finished_runs())
        assert ext.settings.retention is None


def test_the_default_retention_is_seven_days(durable_app, durable_worker, redis_client):
    ext = extension_for(durable_app)
    assert ext.settings.retention == 7 * 86400
    run = celery_durable.start(arithmetic, 1, 1)
    run.result(timeout=15)
    ttl = redis_client.ttl(ext.keys.run_events(run.id))
    assert 7 * 86400 - 60 < ttl <= 7 * 86400


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "would drop a run the moment it ends"),
        ("0s", "would drop a run the moment it ends"),
        (-5, "cannot be negative"),
        ("7 days", "is not a duration"),
        (True, "expected a duration"),
    ],
)
def test_a_bad_retention_is_refused(value, message):
    app = Celery("bad-retention")
    app.conf.durable_retention = value
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_app(app)


def test_retention_takes_durations():
    app = Celery("retention")
    app.conf.durable_retention = "36h"
    assert Settings.from_app(app).retention == 36 * 3600
    app.conf.durable_retention = 90
    assert Settings.from_app(app).retention == 90.0


# -- the journal's part ------------------------------------------------------------------


@pytest.fixture
def journal(redis_client) -> Journal:
    return Journal(redis_client, Keys("jt"), retention=60)


def test_the_final_append_expires_every_key_of_the_run(journal, redis_client):
    keys = journal.keys
    journal.append("r1", 0, [("workflow.started", {})])
    journal.send("r1", "ping", b"\x90")  # an inbox entry never consumed, and its send id
    assert redis_client.pttl(keys.run_inbox("r1")) == -1
    journal.append("r1", 1, [("workflow.executing", {})])
    assert redis_client.pttl(keys.run_meta("r1")) == -1  # not finished: kept
    journal.append("r1", 2, [("workflow.completed", {"result": 1})])
    for key in (
        keys.run_events("r1"),
        keys.run_meta("r1"),
        keys.run_inbox("r1"),
        keys.run_sent("r1"),
    ):
        assert 59_000 < redis_client.pttl(key) <= 60_000, key
    assert redis_client.zscore(keys.finished_runs(), "r1") == pytest.approx(time.time() + 60, abs=5)


def test_a_child_ending_after_its_parent_leaves_no_inbox_behind(journal, redis_client):
    keys = journal.keys
    journal.append("p", 0, [("workflow.started", {})])
    journal.append("p", 1, [("workflow.cancelled", {"error": {}})])  # the parent ends first
    journal.append("p.3", 0, [("workflow.started", {"parent": "p"})])
    journal.append(
        "p.3",
        1,
        [("workflow.completed", {"result": 1})],
        notify=Notification("p", "child:p.3", b"\x80"),
    )
    # The parent's inbox took the notice, and expires with the parent.
    inbox_ttl, meta_ttl = (
        redis_client.pttl(keys.run_inbox("p")),
        redis_client.pttl(keys.run_meta("p")),
    )
    assert inbox_ttl > 0 and abs(inbox_ttl - meta_ttl) < 1000

    redis_client.delete(keys.run_meta("p"), keys.run_events("p"), keys.run_inbox("p"))  # expired
    journal.append("p.4", 0, [("workflow.started", {"parent": "p"})])
    journal.append(
        "p.4",
        1,
        [("workflow.completed", {"result": 1})],
        notify=Notification("p", "child:p.4", b"\x80"),
    )
    assert not redis_client.exists(keys.run_inbox("p"))  # no stray key for a run that is gone


def test_the_sweep_is_bounded_and_leaves_live_runs(durable_app, redis_client):
    durable_app.conf.durable_retention = 60
    ext = extension_for(durable_app)
    keys, now = ext.keys, time.time()
    total = BATCH * 2 + 100
    pipe = redis_client.pipeline(transaction=False)
    for n in range(total):  # finished runs whose keys are already gone
        pipe.zadd(keys.runs_index(), {f"gone{n}": now - 100})
        pipe.zadd(keys.finished_runs(), {f"gone{n}": now - 1})
    pipe.execute()
    # A run filed as finished whose final append was refused: it lives on, no TTL.
    ext.journal.append("alive", 0, [("workflow.started", {})])
    redis_client.zadd(keys.runs_index(), {"alive": now})
    redis_client.zadd(keys.finished_runs(), {"alive": now - 1})
    # One whose TTL outlasts its score (clocks apart): looked at again later.
    ext.journal.append("late", 0, [("workflow.started", {})])
    ext.journal.append("late", 1, [("workflow.completed", {"result": 1})])
    redis_client.zadd(keys.runs_index(), {"late": now})
    redis_client.zadd(keys.finished_runs(), {"late": now - 1})

    sweep = RetentionSweep(ext)
    assert sweep.sweep() == BATCH
    assert redis_client.zcard(keys.finished_runs()) == total + 2 - BATCH
    while sweep.sweep():
        pass
    assert {m.decode() for m in redis_client.zrange(keys.runs_index(), 0, -1)} == {"alive", "late"}
    assert redis_client.zscore(keys.finished_runs(), "alive") is None
    assert redis_client.zscore(keys.finished_runs(), "late") > now + 50


def test_the_sweep_trims_the_global_stream_to_the_retention(durable_app, redis_client):
    durable_app.conf.durable_retention = 60
    ext = extension_for(durable_app)
    stream = ext.keys.events()
    old_ms = int((time.time() - 3600) * 1000)
    for n in range(300):
        redis_client.xadd(stream, {"e": b"old"}, id=f"{old_ms}-{n}")
    ext.emit("worker.offline", {"worker": "w@x"})
    ext.activity_writer.flush()
    RetentionSweep(ext).sweep()
    remaining = redis_client.xrange(stream)
    assert [fields[b"e"] for _, fields in remaining if fields[b"e"] == b"old"] == []
    assert len(remaining) == 1


# -- the other keys the extension writes ------------------------------------------------------


def test_a_rule_history_is_bounded_and_expires_after_the_retention(redis_client):
    from celery_durable.rules.history import RuleHistory

    keys = Keys("jt")
    history = RuleHistory(redis_client, keys, maxlen=5, text_limit=300, retention=60)
    for n in range(400):
        history.record("r", {"n": n, "error": "e" * 10_000})
    key = keys.rule_history("r")
    assert 55 < redis_client.ttl(key) <= 60
    assert redis_client.xlen(key) < 400  # trimmed (approximately) to maxlen
    (newest,) = history.read("r", limit=1)
    assert newest["n"] == 399 and len(newest["error"].encode()) <= 300


def test_the_action_queue_is_capped_and_forgets_departed_consumers(durable_app, redis_client):
    from celery_durable.rules.action_queue import MAXLEN, ActionQueue

    ext = extension_for(durable_app)
    queue = ActionQueue(ext.redis, ext.keys)
    pipe = redis_client.pipeline(transaction=False)
    for _ in range(MAXLEN + 1000):
        pipe.xadd(queue.key, {"j": b"\x80"})
    pipe.execute()
    queue.enqueue({"n": 1})
    assert queue.pending() < MAXLEN + 1000
    queue.take("gone@host", count=1, block_ms=1)  # holds one job
    redis_client.xgroup_createconsumer(queue.key, "durable-actions", "idle@host")
    assert queue.forget_consumers(idle_seconds=0) == 1  # the one holding a job stays
    names = {c["name"] for c in redis_client.xinfo_consumers(queue.key, "durable-actions")}
    assert names == {b"gone@host"}
