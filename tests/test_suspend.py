"""Sleeping, waiting for events, cancelling and timing out, on a real worker."""

from __future__ import annotations

import threading
import time

import pytest

import celery_durable
from celery_durable import (
    EncodingError,
    EventTimeoutError,
    RunFinishedError,
    RunNotFoundError,
    WorkflowCancelledError,
    WorkflowTimedOutError,
    sleep,
    step,
    wait_for_event,
    workflow,
)
from celery_durable.codec import unpackb
from celery_durable.extension import extension_for
from celery_durable.timers.store import TimerStore
from tests.steps import count
from tests.waiting import wait_until


def _types(run) -> list[str]:
    return [e["type"] for e in run.events()]


# -- sleep ----------------------------------------------------------------------


def test_sleep_suspends_the_run_and_a_worker_resumes_it_when_due(
    durable_worker, durable_wait_for_status, counter
):
    run = celery_durable.start(nap, 1.0)
    durable_wait_for_status(run, "sleeping")
    assert counter("before_nap") == 1 and counter("after_nap") == 0
    assert run.result(timeout=15) == "rested"
    assert counter("before_nap") == 1 and counter("after_nap") == 1
    events = run.events()
    suspended = next(e for e in events if e["type"] == "workflow.suspended")
    assert suspended["data"]["status"] == "sleeping"
    resumed = [e for e in events if e["type"] == "workflow.executing"][1]
    assert resumed["ts"] >= suspended["data"]["until"]  # not before it was due
    assert _types(run).count("sleep.started") == 1


def test_a_sleep_already_due_on_replay_returns_at_once(durable_app, durable_worker, counter):
    ext = extension_for(durable_app)
    ext.journal.create("late", "tests.nap", {"name": "tests.nap", "args": [3600], "kwargs": {}})
    ext.journal.append(
        "late",
        1,
        [
            (
                "step.completed",
                {
                    "position": 0,
                    "name": "before_nap",
                    "attempt": 1,
                    "result": 1,
                    "started_at": 0.0,
                    "duration": 0.0,
                },
            ),
            (
                "sleep.started",
                {"position": 1, "name": "sleep", "seconds": 3600, "until": time.time() - 1},
            ),
        ],
    )
    ext.dispatch("late")
    run = celery_durable.get_run("late")
    assert run.result(timeout=15) == "rested"
    assert "workflow.suspended" not in _types(run)
    assert counter("before_nap") == 0


def test_a_stray_message_for_a_sleeping_run_is_dropped(
    durable_app, durable_worker, durable_wait_for_status, processed
):
    run = celery_durable.start(nap, 3600)
    durable_wait_for_status(run, "sleeping")
    before = run.events()
    extension_for(durable_app).dispatch(run.id)  # a duplicate, a late safety net
    processed(run.id, times=2)
    assert run.events() == before  # not replayed, nothing appended
    assert run.status() == "sleeping"


def test_timers_are_claimed_exactly_once_by_competing_pollers(redis_client):
    from celery_durable.keys import Keys

    stores = [TimerStore(redis_client, Keys("tt")) for _ in range(3)]
    for n in range(300):
        stores[0].schedule(f"run{n}", wake_at=time.time() - 1)
    claimed: list[str] = []
    lock = threading.Lock()

    def poll(store: TimerStore) -> None:
        while True:
            batch, _ = store.claim(time.time(), lease=60, limit=7)
            if not batch:
                return
            with lock:
                claimed.extend(t.run_id for t in batch)
            store.release(batch)

    threads = [threading.Thread(target=poll, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(claimed) == sorted(f"run{n}" for n in range(300))
    assert stores[0].pending() == 0


def test_a_lease_not_released_fires_again(redis_client):
    from celery_durable.keys import Keys

    store = TimerStore(redis_client, Keys("tt"))
    store.schedule("r", wake_at=100.0)
    claimed, next_due = store.claim(101.0, lease=30)
    assert len(claimed) == 1 and next_due == 131.0  # leased until 101 + 30
    assert store.claim(120.0) == ([], 131.0)
    (again,), _ = store.claim(131.5)  # the claimer died: it fires again
    assert again.run_id == "r"
    store.schedule("r", wake_at=500.0)  # the run suspended anew meanwhile
    assert store.release([again]) == 0  # so the release leaves it alone
    assert store.next_due() == 500.0


# -- events ----------------------------------------------------------------------


def test_wait_for_event_suspends_until_send_event(durable_worker, durable_wait_for_status):
    run = celery_durable.start(approval)
    durable_wait_for_status(run, "waiting")
    celery_durable.send_event(run.id, "approval", {"ok": True, "by": "ann"})
    assert run.result(timeout=15) == {"approved": True, "by": "ann"}
    received = next(e for e in run.events() if e["type"] == "event.received")
    assert received["data"]["payload"] == {"ok": True, "by": "ann"}


def test_an_event_sent_before_the_wait_is_not_lost(
    durable_worker, durable_wait_for_status, durable_time_skip
):
    run = celery_durable.start(nap_then_approval)
    durable_wait_for_status(run, "sleeping")
    celery_durable.send_event(run.id, "approval", {"ok": False, "by": "bob"})
    durable_time_skip.advance()  # the sleep ends only after the event was sent
    assert run.result(timeout=15) == {"approved": False, "by": "bob"}
    assert "event.waiting" not in _types(run)


def test_other_events_do_not_satisfy_the_wait(durable_worker, durable_wait_for_status):
    run = celery_durable.start(approval)
    durable_wait_for_status(run, "waiting")
    celery_durable.send_event(run.id, "comment", "hello")
    celery_durable.send_event(run.id, "approval", {"ok": True, "by": "cy"})
    assert run.result(timeout=15) == {"approved": True, "by": "cy"}


def test_event_timeout_raises_an_error_the_workflow_can_catch(durable_worker):
    run = celery_durable.start(approval_or_default, 0.5)
    assert run.result(timeout=15) == "timed out waiting for 'approval'"
    assert "event.timed_out" in _types(run)


def test_uncaught_event_timeout_fails_the_run(durable_worker):
    run = celery_durable.start(approval_with_timeout, 0.3)
    with pytest.raises(EventTimeoutError, match="no event 'approval'"):
        run.result(timeout=15)


def test_send_event_errors(durable_worker):
    with pytest.raises(RunNotFoundError):
        celery_durable.send_event("no-such-run", "approval", {})
    done = celery_durable.start(nap, 0)
    done.result(timeout=15)
    with pytest.raises(RunFinishedError, match="is completed"):
        celery_durable.send_event(done.id, "approval", {})
    waiting = celery_durable.start(approval)
    with pytest.raises(EncodingError, match=r"payload\['x'\]: a value of type builtins.object"):
        celery_durable.send_event(waiting.id, "approval", {"x": object()})
    with pytest.raises(ValueError, match="event name"):
        celery_durable.send_event(waiting.id, "", {})


# -- cancellation ------------------------------------------------------------------


def test_cancel_a_sleeping_run_drops_its_timers(
    durable_app, durable_worker, durable_wait_for_status, redis_client
):
    run = celery_durable.start(nap, 3600)
    durable_wait_for_status(run, "sleeping")
    timers = extension_for(durable_app).keys.timers()
    assert redis_client.zscore(timers, f"wake:{run.id}") is not None
    assert run.cancel() is True
    assert run.status() == "cancelled"
    assert redis_client.zscore(timers, f"wake:{run.id}") is None
    with pytest.raises(WorkflowCancelledError, match="was cancelled"):
        run.result(timeout=5)
    assert run.cancel() is False  # already finished


def test_cancel_a_waiting_run(durable_worker, durable_wait_for_status):
    run = celery_durable.start(approval)
    durable_wait_for_status(run, "waiting")
    run.cancel()
    with pytest.raises(WorkflowCancelledError):
        run.result(timeout=5)
    with pytest.raises(RunFinishedError):
        celery_durable.send_event(run.id, "approval", {"ok": True})


def test_cancel_a_running_run_stops_it_at_the_next_step(durable_worker, redis_client, counter):
    run = celery_durable.start(gated)
    wait_until(lambda: counter("gate_entered") == 1)
    assert run.status() == "running"
    assert run.cancel() is True
    redis_client.rpush("test:gate", "open")
    with pytest.raises(WorkflowCancelledError):
        run.result(timeout=15)
    assert counter("after_gate") == 0
    # The step that was running finished and was recorded before the run stopped.
    assert _types(run)[-2:] == ["step.completed", "workflow.cancelled"]


# -- max_duration --------------------------------------------------------------------


def test_max_duration_times_out_a_sleeping_run(durable_app, durable_worker):
    seen = _read_global_events(durable_app)
    run = celery_durable.start(short_lived_nap)
    with pytest.raises(WorkflowTimedOutError, match=r"max_duration of 1\.0s"):
        run.result(timeout=15)
    assert run.status() == "timed_out"
    timed_out = [e for e in seen() if e["type"] == "workflow.timed_out"]
    assert [e["data"]["run_id"] for e in timed_out] == [run.id]
    assert timed_out[0]["data"]["workflow_name"] == "tests.short_lived_nap"


def test_max_duration_times_out_a_waiting_run(durable_worker):
    run = celery_durable.start(short_lived_wait)
    with pytest.raises(WorkflowTimedOutError):
        run.result(timeout=15)


def test_max_duration_stops_a_running_run_at_a_step_boundary(durable_worker, counter):
    run = celery_durable.start(slow_steps)
    with pytest.raises(WorkflowTimedOutError):
        run.result(timeout=15)
    assert 1 <= counter("slow") < 10


# -- step retries ----------------------------------------------------------------------


def test_a_long_step_retry_suspends_the_run_and_resumes_it_when_due(
    durable_worker, durable_wait_for_status, counter
):
    run = celery_durable.start(retried_later, 1.5)
    # The wait holds no worker: the run sleeps on a timer, and the (solo)
    # worker serves another run meanwhile.
    durable_wait_for_status(run, "sleeping")
    assert counter("retried_later") == 1
    assert celery_durable.start(quick).result(timeout=5) == "quick"
    assert run.result(timeout=15) == "ok on attempt 2"
    retrying = next(e for e in run.events() if e["type"] == "step.retrying")
    resumed = [e for e in run.events() if e["type"] == "workflow.executing"][1]
    assert resumed["ts"] >= retrying["data"]["retry_at"]  # not before it was due
    assert _types(run).count("workflow.suspended") == 1


def test_cancel_during_a_step_retry_wait_ends_the_run_at_once(
    durable_worker, durable_wait_for_status, counter
):
    run = celery_durable.start(retried_later, 20)
    durable_wait_for_status(run, "sleeping")
    began = time.monotonic()
    assert run.cancel() is True
    with pytest.raises(WorkflowCancelledError):
        run.result(timeout=5)
    assert time.monotonic() - began < 5
    assert counter("retried_later") == 1  # the retry never ran


def test_max_duration_ends_a_run_waiting_to_retry_a_step(durable_worker, counter):
    began = time.monotonic()
    run = celery_durable.start(short_lived_retry)
    with pytest.raises(WorkflowTimedOutError):
        run.result(timeout=15)
    assert time.monotonic() - began < 10  # at its 2 s deadline, not after the 20 s wait
    assert counter("retried_later") == 1


def test_a_short_step_retry_waits_inline(durable_worker, counter):
    run = celery_durable.start(retried_soon)
    assert run.result(timeout=10) == "ok on attempt 2"
    assert "workflow.suspended" not in _types(run)


# -- child workflows --------------------------------------------------------------


def test_child_workflow_is_started_once_and_its_result_awaited(
    durable_app, durable_worker, counter, redis_client
):
    run = celery_durable.start(parent, 5)
    assert run.result(timeout=20) == {"child": 10, "after": "DONE"}
    child_id = next(e for e in run.events() if e["type"] == "child.started")["data"]["child_run_id"]
    assert child_id == f"{run.id}.0"
    assert celery_durable.get_run(child_id).result(timeout=5) == 10
    # The parent waited durably and was replayed after; the child ran once.
    assert "workflow.suspended" in _types(run)
    assert counter("child_body") == 1
    assert redis_client.zcard(extension_for(durable_app).keys.runs_index()) == 2


def test_a_failed_child_raises_in_the_parent(durable_worker):
    run = celery_durable.start(parent_of_failure)
    assert run.result(timeout=20) == "child failed: ValueError: child broke"


# -- time skip ------------------------------------------------------------------------


def test_a_seven_day_sleep_finishes_in_seconds_with_the_time_skip(
    durable_worker, durable_time_skip, durable_wait_for_status
):
    began = time.monotonic()
    run = celery_durable.start(week_long)
    durable_wait_for_status(run, "sleeping")
    assert durable_time_skip.advance() == pytest.approx(7 * 86400, abs=5)
    assert run.result(timeout=5) == "a week later"
    assert time.monotonic() - began < 5


def test_time_skip_fires_event_timeouts(durable_worker, durable_time_skip, durable_wait_for_status):
    run = celery_durable.start(approval_or_default, "3d")
    durable_wait_for_status(run, "waiting")
    durable_time_skip.advance("3d")
    assert run.result(timeout=5) == "timed out waiting for 'approval'"


# -- workflows used above -------------------------------------------------------------


@step
def before_nap() -> int:
    return count("before_nap")


@step
def after_nap() -> int:
    return count("after_nap")


@workflow(name="tests.nap")
def nap(seconds: float) -> str:
    before_nap()
    sleep(seconds)
    after_nap()
    return "rested"


@workflow(name="tests.approval")
def approval() -> dict:
    decision = wait_for_event("approval")
    return {"approved": decision["ok"], "by": decision["by"]}


@workflow(name="tests.nap_then_approval")
def nap_then_approval() -> dict:
    sleep("1h")
    decision = wait_for_event("approval", timeout="1h")
    return {"approved": decision["ok"], "by": decision["by"]}


@workflow(name="tests.approval_or_default")
def approval_or_default(timeout: float | str) -> str:
    try:
        wait_for_event("approval", timeout=timeout)
    except EventTimeoutError as exc:
        return f"timed out waiting for {exc.event_name!r}"
    return "approved"


@workflow(name="tests.approval_with_timeout")
def approval_with_timeout(timeout: float) -> None:
    wait_for_event("approval", timeout=timeout)


@step
def gate() -> None:
    count("gate_entered")
    client = extension_for().redis
    assert client.blpop("test:gate", timeout=10) is not None


@step
def after_gate() -> None:
    count("after_gate")


@workflow(name="tests.gated")
def gated() -> None:
    gate()
    after_gate()


@workflow(name="tests.short_lived_nap", max_duration="1s")
def short_lived_nap() -> None:
    sleep("1h")


@workflow(name="tests.short_lived_wait", max_duration=0.5)
def short_lived_wait() -> None:
    wait_for_event("never")


def _fails_once() -> str:
    n = count("retried_later")
    if n == 1:
        raise RuntimeError("first attempt breaks")
    return f"ok on attempt {n}"


@workflow(name="tests.retried_later")
def retried_later(delay: float) -> str:
    return step(max_retries=1, retry_delay=delay, name="tests.fails_once")(_fails_once)()


@workflow(name="tests.short_lived_retry", max_duration="2s")
def short_lived_retry() -> str:
    return step(max_retries=1, retry_delay="20s", name="tests.fails_once")(_fails_once)()


@workflow(name="tests.retried_soon")
def retried_soon() -> str:
    return step(max_retries=1, retry_delay="0.2s", name="tests.fails_once")(_fails_once)()


@workflow(name="tests.quick")
def quick() -> str:
    return "quick"


@step
def slow() -> None:
    count("slow")
    time.sleep(0.2)


@workflow(name="tests.slow_steps", max_duration=0.5)
def slow_steps() -> None:
    for _ in range(10):
        slow()


@step
def child_body(x: int) -> int:
    count("child_body")
    return x * 2


@workflow(name="tests.child")
def child(x: int) -> int:
    return child_body(x)


@step
def shout_done() -> str:
    return "DONE"


@workflow(name="tests.parent")
def parent(x: int) -> dict:
    handle = celery_durable.start(child, x)
    value = handle.result()
    return {"child": value, "after": shout_done()}


@workflow(name="tests.failing_child")
def failing_child() -> None:
    raise ValueError("child broke")


@workflow(name="tests.parent_of_failure")
def parent_of_failure() -> str:
    try:
        failing_child.start().result()
    except ValueError as exc:
        return f"child failed: {type(exc).__name__}: {exc}"
    return "unreachable"


@workflow(name="tests.week_long")
def week_long() -> str:
    sleep("7d")
    return "a week later"


def _read_global_events(app):
    ext = extension_for(app)

    def read() -> list[dict]:
        return [unpackb(f[b"e"]) for _, f in ext.redis.xrange(ext.keys.events())]

    return read
