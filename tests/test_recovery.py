"""Heartbeats, the recovery of a dead worker, and the dispatch safety net.

The dead worker here is a record left in Redis by a worker that is gone
(`ghost@nowhere`); tests/faults/ kills real worker processes.
"""

from __future__ import annotations

import time

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable.codec import packb_lenient, unpackb
from celery_durable.extension import extension_for
from celery_durable.worker.heartbeat import Heartbeat
from celery_durable.worker.monitor import WorkerMonitor
from tests.steps import arithmetic

GHOST = "ghost@nowhere"


@pytest.fixture
def durable_app_config():
    return {"durable_heartbeat_interval": 0.2, "durable_worker_timeout": 1.0}


def _monitor(ext, hostname: str) -> WorkerMonitor:
    """The recovery half of a live worker that is not running its threads."""
    return WorkerMonitor(ext, Heartbeat(ext, hostname))


def _global_events(ext) -> list[dict]:
    ext.activity_writer.flush()  # written in the background otherwise
    return [unpackb(f[b"e"]) for _, f in ext.redis.xrange(ext.keys.events())]


def _leave_a_dead_worker(ext, run_id: str | None = None, task: dict | None = None) -> None:
    """What a worker killed mid-run leaves in Redis."""
    ext.redis.zadd(ext.keys.workers(), {GHOST: time.time() - 3600})
    if run_id:
        ext.redis.sadd(ext.keys.worker_runs(GHOST), run_id)
    if task:
        ext.redis.hset(ext.keys.worker_tasks(GHOST), task["task_id"], packb_lenient(task))


def _run_left_running(ext, run_id: str) -> None:
    ext.journal.create(
        run_id, "tests.arithmetic", {"name": "tests.arithmetic", "args": [2, 5], "kwargs": {}}
    )
    ext.journal.append(
        run_id,
        1,
        [
            ("workflow.executing", {"worker": GHOST, "pid": 4242, "attempt": 1}),
            (
                "step.completed",
                {
                    "position": 0,
                    "name": "add",
                    "attempt": 1,
                    "result": 7,
                    "started_at": 0.0,
                    "duration": 0.0,
                },
            ),
        ],
        meta={"owner": f"{GHOST}/4242"},
    )
    ext.timers.dispatched(run_id)


def test_a_live_worker_beats_and_signs_off(durable_app):
    ext = extension_for(durable_app)
    with start_worker(durable_app, pool="solo", perform_ping_check=False) as worker:
        assert ext.redis.zscore(ext.keys.workers(), worker.hostname) is not None
    deadline = time.monotonic() + 5  # it signs off once it holds nothing
    while ext.redis.zscore(ext.keys.workers(), worker.hostname) is not None:
        assert time.monotonic() < deadline, "the stopped worker did not sign off"
        time.sleep(0.02)


def test_a_dead_workers_runs_are_taken_over_and_it_is_reported(durable_app, counter):
    ext = extension_for(durable_app)
    _run_left_running(ext, "orphan-run")
    task = {
        "task_id": "t-1",
        "task_name": "shop.send_mail",
        "worker": GHOST,
        "body": b'[["a@b.c"], {}, {}]',
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": {"task": "shop.send_mail"},
        "delivery_info": {"exchange": "", "routing_key": "email", "priority": 3},
    }
    _leave_a_dead_worker(ext, "orphan-run", task)
    with start_worker(durable_app, pool="solo", perform_ping_check=False) as worker:
        run = celery_durable.get_run("orphan-run")
        assert run.result(timeout=15) == {"total": 7, "doubled": 14, "word": "DONE"}
    assert counter("add") == 0  # recorded before the death: not run again
    executing = [e for e in run.events() if e["type"] == "workflow.executing"]
    assert executing[-1]["data"]["takeover"] == f"{GHOST}/4242"
    events = _global_events(ext)
    (orphaned,) = [e for e in events if e["type"] == "task.orphaned"]
    assert orphaned["data"]["task_id"] == "t-1"
    assert orphaned["data"]["message"]["body"] == b'[["a@b.c"], {}, {}]'
    assert orphaned["data"]["queue"] == "email"
    assert orphaned["data"]["args_repr"] == "['a@b.c']"
    (offline,) = [e for e in events if e["type"] == "worker.offline"]
    assert offline["data"]["worker"] == GHOST
    assert offline["data"]["recovered_by"] == worker.hostname
    assert offline["data"]["runs"] == ["orphan-run"]
    assert ext.redis.zscore(ext.keys.workers(), GHOST) is None
    assert not ext.redis.exists(ext.keys.worker_runs(GHOST), ext.keys.worker_tasks(GHOST))


def test_a_run_suspended_by_a_dead_worker_gets_its_timers_back(durable_app):
    """The worker died after recording the sleep but before setting the timer."""
    ext = extension_for(durable_app)
    ext.journal.create("napper", "tests.nap", {"name": "tests.nap", "args": [60], "kwargs": {}})
    ext.timers.dispatched("napper")
    ext.journal.append(
        "napper",
        1,
        [
            ("workflow.executing", {"worker": GHOST, "pid": 4242, "attempt": 1}),
            ("sleep.started", {"position": 0, "name": "sleep", "seconds": 60, "until": 1234.5}),
            ("workflow.suspended", {"status": "sleeping", "until": 1234.5}),
        ],
        meta={"owner": f"{GHOST}/4242", "wake_at": "1234.5", "deadline_at": ""},
    )
    _leave_a_dead_worker(ext, "napper")
    assert ext.timers.pending() == 0
    assert _monitor(ext, "live@host").recover(GHOST) is True
    assert ext.redis.zscore(ext.keys.timers(), "wake:napper") == 1234.5


def test_exactly_one_live_worker_recovers_a_dead_one(durable_app):
    ext = extension_for(durable_app)
    _leave_a_dead_worker(ext)
    monitors = [_monitor(ext, f"live{n}@host") for n in range(3)]
    outcomes = [monitor.recover(GHOST) for monitor in monitors]
    assert outcomes.count(True) == 1
    offline = [e for e in _global_events(ext) if e["type"] == "worker.offline"]
    assert len(offline) == 1


def test_a_worker_that_came_back_is_not_recovered(durable_app):
    ext = extension_for(durable_app)
    _leave_a_dead_worker(ext)
    ext.redis.zadd(ext.keys.workers(), {GHOST: time.time()})  # it beats again
    assert _monitor(ext, "live@host").recover(GHOST) is False
    assert ext.redis.zscore(ext.keys.workers(), GHOST) is not None


def test_a_stray_message_does_not_steal_a_running_run(durable_app, durable_worker, processed):
    ext = extension_for(durable_app)
    _run_left_running(ext, "owned")
    ext.redis.zadd(ext.keys.workers(), {GHOST: time.time() + 3600})  # owner alive
    run = celery_durable.get_run("owned")
    before = run.events()
    ext.dispatch("owned")  # a duplicate or late message, not a takeover
    ext.dispatch("owned", takeover="someone-else@host/1")  # names the wrong owner
    processed("owned", times=2)
    assert run.status() == "running"
    assert run.events() == before


def test_a_run_whose_dispatch_failed_is_sent_by_a_worker(durable_redis_url, counter):
    """start() records the run, then the broker is unreachable: nothing is lost."""
    worker_app = Celery("workers", broker=durable_redis_url, set_as_current=False)
    worker_app.conf.update(durable_redis_url=durable_redis_url, durable_redispatch_after=1.0)
    celery_durable.install(worker_app)
    client = Celery("client", broker="redis://127.0.0.1:1/0", set_as_current=True)
    client.conf.update(
        durable_redis_url=durable_redis_url, task_publish_retry=False, durable_redispatch_after=1.0
    )
    celery_durable.install(client)
    run = celery_durable.start(arithmetic, 1, 1)  # logs a warning, returns the handle
    assert run.status() == "pending"
    with start_worker(worker_app, pool="solo", perform_ping_check=False):
        assert run.result(timeout=15)["total"] == 2
    assert counter("add") == 1
