"""Dispatched steps (spawn, map, gather, queue steps) with an in-process worker and real Redis.

The in-process worker serves the default queue, so the steps here are
dispatched to it (`queue="celery"`, or spawned inline steps, which go to
the run's queue). Real worker processes, other queues, kills and cancels:
`tests/test_fanout_workers.py`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner

import celery_durable
from celery_durable import (
    EncodingError,
    StepHandle,
    gather,
    get_context,
    step,
    workflow,
)
from celery_durable.extension import extension_for
from celery_durable.journal.journal import StepsWrite
from celery_durable.journal.steps import BUSY, DONE, ENDED, RUN, STALE
from celery_durable.workflows.listing import describe_run
from tests.waiting import wait_until


def _count(name: str) -> None:
    extension_for().redis.incr(f"test:count:{name}")


@step(name="t.fan.square")
def square(x: int) -> int:
    _count(f"square:{x}")
    return x * x


@step(name="t.fan.cube", queue="celery")
def cube(x: int) -> int:
    _count(f"cube:{x}")
    return x**3


@step(name="t.fan.picky", queue="celery", max_retries=1, retry_delay=0)
def picky(x: int, bad: list[int]) -> int:
    _count(f"picky:{x}")
    if x in bad:
        raise ValueError(f"item {x} is bad")
    return x


@step(name="t.fan.asq")
async def asq(x: int) -> int:
    _count(f"asq:{x}")
    await asyncio.sleep(0)
    return x * x


@step(name="t.fan.whoami", queue="celery")
def whoami() -> dict[str, Any]:
    ctx = get_context()
    return {"run_id": ctx.run_id, "workflow": ctx.workflow_name, "key": ctx.idempotency_key}


@step(name="t.fan.nowhere", queue="nowhere")
def nowhere(x: int) -> int:
    return x


@workflow(name="t.fan.movie")
def movie(n: int) -> dict[str, Any]:
    squares = square.map(range(n))  # inline steps spawned: tasks on the run's queue
    c = cube(3)  # a queue step called plainly
    h1, h2 = square.spawn(10), cube.spawn(2)
    a, b = gather(h1, h2)
    return {"squares": squares, "cube": c, "a": a, "b": b, "alone": square(7)}


@workflow(name="t.fan.picky")
def picky_flow(n: int, bad: list[int]) -> dict[str, Any]:
    handles = [picky.spawn(i, bad) for i in range(n)]
    try:
        return {"results": gather(*handles)}
    except ValueError as exc:
        return {"error": str(exc)}


@workflow(name="t.fan.async")
async def async_movie(n: int) -> dict[str, Any]:
    together = await asyncio.gather(*(cube(i) for i in range(n)), asq(10))
    alone = await asq(5)  # an inline async step awaited alone runs inline, as before
    return {"together": together, "alone": alone}


@workflow(name="t.fan.context")
def context_flow() -> dict[str, Any]:
    return whoami()


@workflow(name="t.fan.unencodable")
def unencodable() -> Any:
    return square.spawn(object())


@step(name="t.fan.once_bad", queue="celery")
def once_bad() -> str:
    ext = extension_for()
    if ext.redis.incr(f"test:once_bad:{get_context().run_id}") == 1:
        raise ValueError("first time unlucky")
    return "ok"


@workflow(name="t.fan.retried", max_retries=1)
def retried_flow() -> str:
    return once_bad()


@workflow(name="t.fan.waits")
def waits_forever(n: int) -> list[int]:
    return nowhere.map(range(n))


def _types(run: celery_durable.RunHandle) -> list[str]:
    return [e["type"] for e in run.events()]


def test_map_spawn_gather_and_queue_steps(durable_worker, counter):
    run = celery_durable.start(movie, 4)
    assert run.result(timeout=20) == {
        "squares": [0, 1, 4, 9],
        "cube": 27,
        "a": 100,
        "b": 8,
        "alone": 49,
    }
    types = _types(run)
    # Each batch is recorded in one append: its step.dispatched events, then
    # the suspension; the run is woken once per wait (three waits here).
    first = types.index("step.dispatched")
    assert types[first : first + 5] == ["step.dispatched"] * 4 + ["workflow.suspended"]
    assert types.count("workflow.suspended") == 3
    assert types.count("workflow.executing") == 4
    assert types.count("step.dispatched") == 7
    assert types.count("step.completed") == 8  # 7 dispatched, 1 inline
    events = run.events()
    dispatched = [e["data"] for e in events if e["type"] == "step.dispatched"]
    assert [d["position"] for d in dispatched] == list(range(7))
    assert {d["queue"] for d in dispatched} == {"celery"}
    completed = {e["data"]["position"]: e["data"] for e in events if e["type"] == "step.completed"}
    assert completed[4]["worker"] and completed[4]["task_id"] == dispatched[4]["task_id"]
    assert "worker" not in completed[7]  # the inline step ran in the run's own task
    for x in (0, 1, 2, 3, 10, 7):
        assert counter(f"square:{x}") == 1, x
    assert counter("cube:3") == counter("cube:2") == 1
    # The record of the run's steps is bounded, and expires with the run.
    ext = extension_for(durable_worker.app)
    record = ext.redis.hgetall(ext.keys.run_steps(run.id))
    assert {k.decode()[:2] for k in record} <= {"o:", "wa", "ct"}
    assert 0 < ext.redis.pttl(ext.keys.run_steps(run.id)) <= 7 * 86400 * 1000


def test_a_new_attempt_of_the_workflow_dispatches_a_failed_step_again(durable_worker):
    run = celery_durable.start(retried_flow)
    assert run.result(timeout=20) == "ok"
    events = run.events()
    dispatched = [e["data"] for e in events if e["type"] == "step.dispatched"]
    assert [d["position"] for d in dispatched] == [0, 0]
    assert dispatched[0]["task_id"] != dispatched[1]["task_id"]
    assert dispatched[1]["workflow_attempt"] == 2
    outcomes = [e["type"] for e in events if e["type"] in ("step.failed", "step.completed")]
    assert outcomes == ["step.failed", "step.completed"]


def test_gather_raises_the_first_failure_in_order_after_all_finished(durable_worker, counter):
    run = celery_durable.start(picky_flow, 5, [3, 1])
    assert run.result(timeout=20) == {"error": "item 1 is bad"}
    events = run.events()
    outcomes = {
        e["data"]["position"]: e["type"]
        for e in events
        if e["type"] in ("step.completed", "step.failed")
    }
    assert outcomes == {
        0: "step.completed",
        1: "step.failed",
        2: "step.completed",
        3: "step.failed",
        4: "step.completed",
    }
    retried = [e["data"] for e in events if e["type"] == "step.retrying"]
    assert sorted(r["position"] for r in retried) == [1, 3]
    assert all(r["worker"] and r["error"]["message"].startswith("item") for r in retried)
    failed = [e["data"] for e in events if e["type"] == "step.failed"]
    assert {f["attempt"] for f in failed} == {2}
    assert [counter(f"picky:{x}") for x in range(5)] == [1, 2, 1, 2, 1]
    # One wait for the five, one wake: every outcome was in before the run went on.
    assert _types(run).count("workflow.executing") == 2


def test_async_gather_fans_out_in_one_batch(durable_worker, counter):
    run = celery_durable.start(async_movie, 4)
    assert run.result(timeout=20) == {"together": [0, 1, 8, 27, 100], "alone": 25}
    types = _types(run)
    first = types.index("step.dispatched")
    assert types[first : first + 6] == ["step.dispatched"] * 5 + ["workflow.suspended"]
    assert types.count("workflow.executing") == 2  # woken once for the five
    positions = {
        e["data"]["position"]: e["data"]["name"]
        for e in run.events()
        if e["type"] == "step.dispatched"
    }
    assert positions == {
        0: "t.fan.cube",
        1: "t.fan.cube",
        2: "t.fan.cube",
        3: "t.fan.cube",
        4: "t.fan.asq",
    }
    inline = [e["data"] for e in run.events() if e["type"] == "step.completed"][-1]
    assert inline["position"] == 5 and "worker" not in inline
    assert counter("asq:10") == counter("asq:5") == 1


def test_get_context_in_a_dispatched_step(durable_worker):
    run = celery_durable.start(context_flow, idempotency_key="ctx-1")
    assert run.result(timeout=20) == {
        "run_id": run.id,
        "workflow": "t.fan.context",
        "key": "ctx-1",
    }


def test_spawn_map_and_gather_outside_a_workflow_run_the_function():
    handle = square.spawn(3)
    assert isinstance(handle, StepHandle) and handle.result() == 9
    assert gather(square.spawn(2), cube.spawn(2)) == [4, 8]
    assert cube.map([1, 2, 3]) == [1, 8, 27]
    with pytest.raises(ValueError, match="item 2 is bad"):
        gather(picky.spawn(1, [2, 3]), picky.spawn(2, [2, 3]), picky.spawn(3, [2, 3]))


def test_an_argument_that_cannot_be_recorded_names_the_step(durable_worker):
    run = celery_durable.start(unencodable)
    with pytest.raises(EncodingError, match=r"step 't.fan.square' \(position 0\): argument 0"):
        run.result(timeout=20)


def test_replay_that_spawns_another_step_names_both(durable_app, durable_worker):
    journal = extension_for(durable_app).journal
    journal.create(
        "diverged",
        "t.fan.movie",
        {"name": "t.fan.movie", "args": [2], "kwargs": {}, "idempotency_key": None},
    )
    journal.append(
        "diverged",
        1,
        [
            (
                "step.dispatched",
                {"position": 0, "name": "t.fan.render", "args": [0], "kwargs": {}, "task_id": "x"},
            )
        ],
    )
    extension_for(durable_app).dispatch("diverged")
    run = celery_durable.get_run("diverged")
    wait_until(lambda: run.status() == "blocked", timeout=20, what="the run blocked")
    error = run.events()[-1]["data"]["error"]
    assert error["type"].endswith("NonDeterminismError")
    message = error["message"]
    assert "step 't.fan.render'" in message and "step 't.fan.square'" in message
    assert "position 0" in message


def test_a_waiting_run_shows_its_steps_and_a_cancel_revokes_them(durable_app, durable_worker):
    ext = extension_for(durable_app)
    run = celery_durable.start(waits_forever, 3)
    wait_until(lambda: run.status() == "waiting", timeout=15, what="the run waiting")
    shown = describe_run(run.id)
    flight = shown["steps_in_flight"]
    assert [(s["position"], s["name"], s["queue"], s["state"]) for s in flight] == [
        (p, "t.fan.nowhere", "nowhere", "queued") for p in range(3)
    ]
    timers = {m.decode() for m in ext.redis.zrange(ext.keys.timers(), 0, -1)}
    assert {f"step:{run.id}:{p}" for p in range(3)} <= timers
    assert run.cancel() is True
    assert run.status() == "cancelled"
    # The run's end revoked its outstanding steps and dropped their timers.
    timers = {m.decode() for m in ext.redis.zrange(ext.keys.timers(), 0, -1)}
    assert not {t for t in timers if run.id in t}
    assert describe_run(run.id)["steps_in_flight"] == []


# -- the record of dispatched steps, against Redis directly ------------------------------


def _dispatched_run(ext, run_id: str, positions: int) -> list[str]:
    """A run with `positions` steps dispatched, suspended waiting for all of them."""
    ext.journal.create(run_id, "t.fan.movie", {"name": "t.fan.movie", "args": [], "kwargs": {}})
    task_ids = [f"task-{p}" for p in range(positions)]
    events = [
        (
            "step.dispatched",
            {"position": p, "name": "t.fan.square", "args": [p], "kwargs": {}, "task_id": t},
        )
        for p, t in enumerate(task_ids)
    ]
    write = StepsWrite(
        dispatch=[(i + 1, p, t) for i, (p, t) in enumerate(enumerate(task_ids))],
        await_=list(range(positions)),
    )
    ext.journal.append(
        run_id,
        1,
        [*events, ("workflow.suspended", {"status": "waiting", "until": None})],
        steps=write,
    )
    return task_ids


def test_an_outcome_is_recorded_once_and_the_last_one_wakes_the_run(durable_app):
    ext = extension_for(durable_app)
    records = ext.step_records
    t0, t1 = _dispatched_run(ext, "rec", 2)

    first = records.start("rec", 0, t0, "w1/1", 1.0)
    assert first.verdict == RUN and first.event.data["args"] == [0] and first.attempt == 1
    assert records.start("rec", 0, t0, "w2/7", 1.0).verdict == BUSY  # a duplicate delivery
    assert records.start("rec", 0, "an-old-message", "w2/7", 1.0).verdict == STALE
    assert records.start("rec", 0, t0, "w1/1", 1.0).verdict == RUN  # the same process again

    outcome = {"type": "step.completed", "data": {"position": 0, "result": 0}, "retries": []}
    done = records.record_outcome("rec", 0, first.dispatch_id, outcome)
    assert done.recorded and not done.wake  # position 1 is still out
    again = records.record_outcome("rec", 0, first.dispatch_id, {**outcome, "data": {"x": 1}})
    assert not again.recorded and not again.wake
    assert records.start("rec", 0, t0, "w2/7", 1.0).verdict == DONE

    second = records.start("rec", 1, t1, "w2/7", 1.0)
    last = records.record_outcome(
        "rec", 1, second.dispatch_id, {**outcome, "data": {"position": 1, "result": 1}}
    )
    assert last.recorded and last.wake  # the wait is complete: wake the run, once
    assert not records.record_outcome("rec", 1, second.dispatch_id, outcome).wake
    assert records.outcomes("rec", [0, 1, 2]) == {
        0: outcome,
        1: {**outcome, "data": {"position": 1, "result": 1}},
    }


def test_a_resend_hands_the_step_to_a_new_message_once(durable_app):
    ext = extension_for(durable_app)
    records = ext.step_records
    (t0,) = _dispatched_run(ext, "lost", 1)
    assert records.start("lost", 0, t0, "dead-worker/5", 1.0).verdict == RUN
    # Recovery of the dead worker, twice (two live workers racing): one wins.
    assert records.resend("lost", 0, t0, "dead-worker/5", "new-1") is not None
    assert records.resend("lost", 0, t0, "dead-worker/5", "new-2") is None
    assert records.start("lost", 0, t0, "w1/1", 1.0).verdict == STALE  # the old message, late
    assert records.start("lost", 0, "new-1", "w1/1", 1.0).verdict == RUN
    ext.journal.append("lost", ext.journal.last("lost").seq, [("workflow.cancelled", {})])
    assert records.start("lost", 0, "new-1", "w1/1", 1.0).verdict == ENDED


def test_cli_runs_show_lists_steps_in_flight(durable_redis_url, monkeypatch):
    monkeypatch.setenv("DURABLE_CLI_TEST_REDIS_URL", durable_redis_url)
    from celery.bin.celery import celery as celery_main

    from tests.apps import cli_app as module

    module.app.set_current()
    with start_worker(module.app, pool="solo", perform_ping_check=False):
        run = celery_durable.start(waits_forever, 2)
        wait_until(lambda: run.status() == "waiting", timeout=15, what="the run waiting")

    def cli(*args: str) -> Any:
        return CliRunner().invoke(
            celery_main, ["-A", "tests.apps.cli_app", "durable", *args], catch_exceptions=False
        )

    shown = cli("runs", "show", run.id)
    assert shown.exit_code == 0, shown.output
    assert "steps in flight" in shown.output
    assert "to queue nowhere" in shown.output
    lines = [line.split() for line in shown.output.splitlines()]
    assert ["0", "t.fan.nowhere", "nowhere", "1", "queued", "-", "-"] in lines
    data = json.loads(cli("runs", "show", run.id, "--json").output)
    assert [s["state"] for s in data["steps_in_flight"]] == ["queued", "queued"]
    run.cancel()


def test_the_messages_of_a_batch_go_to_the_broker_in_one_round_trip(durable_app, monkeypatch):
    import redis.connection

    from celery_durable.workflows import dispatched

    ext = extension_for(durable_app)
    messages = [
        dispatched.StepMessage("batch", p, 1, f"task-{p}", {"queue": "batch-q"}) for p in range(50)
    ]
    dispatched.send(ext, messages[:1])  # the producer's connection is made
    sends: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        sends.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    dispatched.send(ext, messages)
    monkeypatch.undo()
    assert len(sends) == 1  # kombu's publish batch: one pipeline for the fifty
    assert ext.redis.llen("batch-q") == 51
