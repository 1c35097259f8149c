"""Dispatched steps with real `celery worker` processes: queues, maps, kills, cancels.

Workers run `tests.apps.fanout` (concurrency 1 each, quick detection of a
dead worker). Runs execute on queue `celery`; `render` steps on queue
`render`. Every step body counts its executions (`fanout.counts`).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from celery_durable import StepNotFoundError
from celery_durable.contrib.workers import WorkerProcess
from celery_durable.extension import DurableExtension
from celery_durable.workflows.dispatched import STEP_TASK_NAME
from celery_durable.workflows.listing import list_workers
from tests.apps import fanout
from tests.faults import global_events, wait_until

WORKER_APP = "tests.apps.fanout"  # for `workers`
pytestmark = pytest.mark.slow

BOTH = ["-Q", f"celery,{fanout.RENDER}"]


def _events(run: Any, kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in run.events() if e["type"] == kind]


def _runners(ext: DurableExtension, run_id: str) -> dict[int, str]:
    """Position -> `hostname/pid|since` of the steps some delivery runs now."""
    record = ext.redis.hgetall(ext.keys.run_steps(run_id))
    return {
        int(k.decode()[2:]): v.decode() for k, v in record.items() if k.decode().startswith("r:")
    }


def _one_outcome_per_position(run: Any, positions: int) -> list[dict[str, Any]]:
    completed = _events(run, "step.completed")
    counted = Counter(e["position"] for e in completed)
    assert counted == Counter(range(positions)), counted
    return completed


def test_a_queue_served_by_a_second_worker_only(ext, redis_client, workers):
    runner = workers.start(1, extra_args=["-Q", "celery"])
    renderer = workers.start(1, extra_args=["-Q", fanout.RENDER])

    # While it waits, the run holds no worker slot: its own worker runs nothing.
    waiting = fanout.gated.start(1)
    wait_until(lambda: fanout.counts(redis_client, waiting.id, [0]) == [1], timeout=20)
    assert waiting.status() == "waiting"
    assert not redis_client.smembers(ext.keys.worker_runs(runner.hostname))
    held = {w["worker"]: w for w in list_workers(app=ext.app)}
    wait_until(
        lambda: (
            {w["worker"]: w for w in list_workers(app=ext.app)}[renderer.hostname]["steps"]
            == [f"{waiting.id}#0"]
        ),
        timeout=5,
        what="the renderer listed as holding the gate step",
    )
    held = {w["worker"]: w for w in list_workers(app=ext.app)}
    assert held[runner.hostname]["steps"] == []
    redis_client.rpush(fanout.gate_key(waiting.id, 0), "open")
    assert waiting.result(timeout=20) == [1]

    run = fanout.render_movie.start([1, 2, 3])
    result = run.result(timeout=30)
    assert result == {
        "paths": ["frame-1.png", "frame-2.png", "frame-3.png"],
        "cover": "frame--1.png",
        "a": "frame--2.png",
        "b": "1 files",
        "upload": "4 files",
    }
    completed = _one_outcome_per_position(run, 7)  # 3 + 1 + 2 dispatched, 1 inline
    renders = [e for e in completed if e["name"] == "fanout.render"]
    assert {e["worker"] for e in renders} == {renderer.hostname}
    assert {e["queue"] for e in renders} == {fanout.RENDER}
    spawned_upload = next(e for e in completed if e["name"] == "fanout.upload" and "worker" in e)
    assert spawned_upload["worker"] == runner.hostname  # an inline step spawned: the run's queue
    assert {e["worker"] for e in _events(run, "workflow.executing")} == {runner.hostname}
    assert all(e["started_at"] <= e["finished_at"] for e in renders)


def test_a_map_of_50_over_two_workers(ext, redis_client, workers):
    first, second = workers.start_many(2, concurrency=1, extra_args=BOTH)
    frames = list(range(50))
    run = fanout.render_map.start(frames, 0.02)
    assert run.result(timeout=60) == [f"frame-{f}.png" for f in frames]
    completed = _one_outcome_per_position(run, 50)
    assert {e["worker"] for e in completed} == {first.hostname, second.hostname}
    assert fanout.counts(redis_client, run.id, frames) == [1] * 50
    types = [e["type"] for e in run.events()]
    # One append dispatched the fifty; one wake when the last finished.
    start = types.index("step.dispatched")
    assert types[start : start + 51] == ["step.dispatched"] * 50 + ["workflow.suspended"]
    assert types.count("workflow.executing") == 2


def test_a_duplicate_delivery_of_a_step_message_is_dropped(client_app, ext, redis_client, workers):
    workers.start_many(2, concurrency=1, extra_args=BOTH)
    run = fanout.gated.start(1)
    wait_until(lambda: fanout.counts(redis_client, run.id, [0]) == [1], timeout=20)
    task_id = redis_client.hget(ext.keys.run_steps(run.id), "t:0").decode()

    def duplicate() -> None:
        client_app.send_task(
            STEP_TASK_NAME,
            args=(run.id, 0, 1),
            kwargs={"journal": ext.journal_id.as_message()},
            task_id=task_id,
            queue=fanout.RENDER,
        )

    duplicate()  # while the first delivery runs it: the other worker drops it
    wait_until(
        lambda: any("dropped (busy" in w.log_text() for w in workers.workers),
        timeout=10,
        what="the duplicate dropped as busy",
    )
    redis_client.rpush(fanout.gate_key(run.id, 0), "open")
    assert run.result(timeout=20) == [1]
    duplicate()  # after the run ended: dropped too
    wait_until(
        lambda: any("dropped (ended" in w.log_text() for w in workers.workers),
        timeout=10,
        what="the late duplicate dropped",
    )
    assert fanout.counts(redis_client, run.id, [0]) == [1]
    _one_outcome_per_position(run, 1)


def _victim_in_a_step(ext: DurableExtension, run_id: str, victim: WorkerProcess) -> bool:
    """The victim runs a step, and its record of held messages (written within
    50 ms of a message's arrival) has that step's message."""
    running = [p for p, r in _runners(ext, run_id).items() if r.startswith(f"{victim.hostname}/")]
    if not running:
        return False
    task_id = ext.redis.hget(ext.keys.run_steps(run_id), f"t:{running[0]}")
    return bool(task_id) and ext.redis.hexists(ext.keys.worker_tasks(victim.hostname), task_id)


def test_kill_9_of_a_worker_mid_map(ext, redis_client, workers):
    victim, survivor = workers.start_many(2, concurrency=1, extra_args=BOTH)
    frames = list(range(20))
    run = fanout.render_map.start(frames, 0.3)
    wait_until(
        lambda: (
            len(redis_client.smembers(fanout.finished_key(run.id))) >= 4
            and _victim_in_a_step(ext, run.id, victim)
        ),
        timeout=30,
        what="the victim in the middle of a step of the map",
    )
    killed = [p for p, r in _runners(ext, run.id).items() if r.startswith(f"{victim.hostname}/")]
    victim.kill(children=True)
    killed_at = time.time()

    assert run.result(timeout=60) == [f"frame-{f}.png" for f in frames]
    completed = _one_outcome_per_position(run, 20)  # every result recorded once
    by_position = {e["position"]: e for e in completed}
    for position in killed:
        assert by_position[position]["worker"] == survivor.hostname
    counts = fanout.counts(redis_client, run.id, frames)
    assert all(n == 1 for p, n in enumerate(counts) if p not in killed), counts
    assert all(counts[p] == 2 for p in killed), (killed, counts)

    offline = wait_until(
        lambda: [
            e
            for e in global_events(ext)
            if e["type"] == "worker.offline" and e["data"]["worker"] == victim.hostname
        ],
        timeout=5,
    )
    assert offline[0]["data"]["steps"] == [f"{run.id}#{p}" for p in killed]
    assert offline[0]["data"]["tasks"] == []  # its step messages were not orphaned tasks
    resent = [e for e in completed if e["position"] in killed]
    assert all(e["finished_at"] - killed_at < 20 for e in resent)  # no visibility timeout


def test_cancel_during_a_map(ext, redis_client, workers):
    workers.start_many(2, concurrency=1, extra_args=BOTH)
    run = fanout.render_map.start(list(range(20)), 3.0)
    wait_until(
        lambda: len(redis_client.smembers(fanout.entered_key(run.id))) == 2,
        timeout=20,
        what="both workers inside a step",
    )
    entered = redis_client.smembers(fanout.entered_key(run.id))
    assert run.cancel() is True
    assert run.status() == "cancelled"
    # The two running bodies are terminated; the 18 queued messages are
    # discarded (revoked) when they arrive.
    wait_until(
        lambda: (
            redis_client.llen(fanout.RENDER) == 0
            and all(w["steps"] == [] for w in list_workers(app=ext.app))
        ),
        timeout=20,
        what="the queued step messages gone and no worker holding a step",
    )
    assert redis_client.smembers(fanout.entered_key(run.id)) == entered
    assert redis_client.smembers(fanout.finished_key(run.id)) == set()
    assert not _events(run, "step.completed")
    logs = "".join(w.log_text() for w in workers.workers)
    assert "Terminating" in logs and "Discarding revoked task" in logs


def test_failures_and_retries_happen_where_the_step_runs(ext, redis_client, workers):
    runner = workers.start(1, extra_args=["-Q", "celery"])
    renderer = workers.start(1, extra_args=["-Q", fanout.RENDER])
    run = fanout.failing.start(10, [7, 3])
    # The first failure in order is raised, once every item has finished.
    assert run.result(timeout=30) == {"results": None, "error": "item 3 cannot be rendered"}
    outcomes = {
        e["data"]["position"]: e["type"]
        for e in run.events()
        if e["type"] in ("step.completed", "step.failed")
    }
    assert outcomes == {p: "step.failed" if p in (3, 7) else "step.completed" for p in range(10)}
    retried = _events(run, "step.retrying")
    assert sorted(r["position"] for r in retried) == [3, 7]
    assert {r["worker"] for r in retried} == {renderer.hostname}
    assert fanout.counts(redis_client, run.id, list(range(10))) == [
        2 if p in (3, 7) else 1 for p in range(10)
    ]

    # A retry delay over a second is a durable timer, not an ETA: the first
    # delivery ends, and the timer sends a new message when due.
    later = fanout.retry_later.start()
    result = later.result(timeout=30)
    assert result["entered"] == 2
    (retrying,) = _events(later, "step.retrying")
    assert retrying["delay"] == 1.5 and retrying["error"]["type"] == "builtins.ConnectionError"
    (done,) = _events(later, "step.completed")
    (dispatched,) = _events(later, "step.dispatched")
    assert done["attempt"] == 2 and done["worker"] == renderer.hostname
    assert done["task_id"] != dispatched["task_id"]  # the retry came in a message of its own
    assert done["started_at"] - retrying["finished_at"] >= 1.4
    assert runner.is_alive()


def test_async_gather_over_real_workers(ext, redis_client, workers):
    workers.start_many(2, concurrency=1, extra_args=BOTH)
    frames = list(range(6))
    run = fanout.async_gather.start(frames, 0.05)
    paths = [f"frame-{f}.png" for f in frames]
    assert run.result(timeout=30) == [*paths, "6 files"]
    types = [e["type"] for e in run.events()]
    start = types.index("step.dispatched")
    assert types[start : start + 7] == ["step.dispatched"] * 6 + ["workflow.suspended"]
    assert types.count("workflow.executing") == 2
    assert fanout.counts(redis_client, run.id, frames) == [1] * 6


def test_replay_after_a_restart_during_a_gather(ext, redis_client, workers):
    before = workers.start_many(2, concurrency=1, extra_args=BOTH)
    frames = list(range(12))
    run = fanout.render_map.start(frames, 0.4)
    wait_until(
        lambda: len(redis_client.smembers(fanout.finished_key(run.id))) >= 3,
        timeout=30,
        what="three frames rendered",
    )
    for worker in before:
        worker.kill(children=True)
    # Outcomes recorded before the kill (a body that ended but whose outcome
    # was not recorded runs again: at least once).
    record = redis_client.hgetall(ext.keys.run_steps(run.id))
    finished = {int(k.decode()[2:]) for k in record if k.decode().startswith("o:")}
    assert len(finished) >= 2, finished
    assert run.status() == "waiting"

    after = workers.start_many(2, concurrency=1, extra_args=BOTH)
    assert run.result(timeout=60) == [f"frame-{f}.png" for f in frames]
    _one_outcome_per_position(run, 12)
    counts = fanout.counts(redis_client, run.id, frames)
    assert all(counts[f] == 1 for f in finished), (finished, counts)
    # The replay answered the gather from the journal: nothing dispatched twice.
    assert sorted(e["position"] for e in _events(run, "step.dispatched")) == frames
    executions = _events(run, "workflow.executing")
    assert executions[-1]["worker"] in {w.hostname for w in after}


def test_a_step_whose_code_is_missing_fails_naming_step_and_queue(ext, workers):
    workers.start(1, extra_args=["-Q", "celery"])
    lean = workers.start(1, app="tests.apps.fanout_lean", extra_args=["-Q", fanout.LEAN])
    run = fanout.missing.start()
    with pytest.raises(StepNotFoundError) as raised:
        run.result(timeout=30)
    message = str(raised.value)
    assert "'fanout.elsewhere'" in message and "'lean'" in message and lean.hostname in message
    (failed,) = _events(run, "step.failed")
    assert failed["worker"] == lean.hostname and failed["queue"] == fanout.LEAN


def test_a_pool_process_killed_in_a_step_is_sent_again_by_its_worker(ext, redis_client, workers):
    (worker,) = workers.start_many(1, concurrency=1, extra_args=BOTH)
    run = fanout.gated.start(1)
    wait_until(lambda: fanout.counts(redis_client, run.id, [0]) == [1], timeout=20)
    (child,) = worker.pool_pids()
    assert _runners(ext, run.id)[0].startswith(f"{worker.hostname}/{child}|")
    worker.kill_pool_child(child)
    # The main process sees WorkerLostError and sends the step again once its
    # pool has replaced the process (POOL_GRACE): a new pool process enters it.
    wait_until(lambda: fanout.counts(redis_client, run.id, [0]) == [2], timeout=15)
    redis_client.rpush(fanout.gate_key(run.id, 0), "open")
    assert run.result(timeout=20) == [2]
    _one_outcome_per_position(run, 1)
    assert "its pool process died" in worker.log_text()
    assert worker.is_alive()


def test_a_hard_time_limit_is_a_failed_attempt(ext, redis_client, workers):
    workers.start_many(1, concurrency=1, extra_args=BOTH)
    run = fanout.overtime_flow.start(10.0)
    assert run.result(timeout=40).startswith("TimeLimitExceeded")
    (retrying,) = _events(run, "step.retrying")
    (failed,) = _events(run, "step.failed")
    assert retrying["attempt"] == 1 and failed["attempt"] == 2
    assert failed["error"]["type"].endswith(".TimeLimitExceeded")
    assert fanout.counts(redis_client, run.id, [0]) == [2]
