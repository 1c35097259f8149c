"""Blocked runs: history the code cannot replay waits for a fix, holding no worker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable import NonDeterminismError, workflow
from celery_durable.extension import extension_for
from celery_durable.workflows import registry
from celery_durable.workflows.blocking import retry_blocked_runs
from tests.apps import deploys


@pytest.fixture
def durable_app_config(durable_http_receiver) -> dict[str, Any]:
    return {
        "durable_rules": [
            {
                "name": "blocked runs",
                "trigger": {"event": "workflow.blocked"},
                "action": {"type": "webhook", "url": f"{durable_http_receiver.url}/blocked"},
            }
        ]
    }


@pytest.fixture
def worker(durable_app: Celery) -> Iterator[Any]:
    with start_worker(
        durable_app, pool="solo", perform_ping_check=False, shutdown_timeout=30
    ) as started:
        yield started


def _blocked_by_a_breaking_deploy(code, wait) -> celery_durable.RunHandle:
    """A run started under version 1, replayed under version 4 (no patch): blocked."""
    run = celery_durable.start(deploys.order, 7)
    wait(run, "waiting")
    code["version"] = 4
    celery_durable.send_event(run.id, "go")
    wait(run, "blocked", timeout=15)
    return run


def test_a_breaking_deploy_blocks_the_run_holding_nothing_and_alerts(
    durable_app, worker, durable_wait_for_status, durable_http_receiver, code, cli
):
    run = _blocked_by_a_breaking_deploy(code, durable_wait_for_status)
    ext = extension_for(durable_app)
    assert not ext.redis.smembers(ext.keys.worker_runs(worker.hostname))  # holds no worker
    assert ext.redis.sismember(ext.keys.blocked_runs(), run.id)
    timers = {m.decode() for m in ext.redis.zrange(ext.keys.timers(), 0, -1)}
    assert f"wake:{run.id}" in timers  # tried again later

    shown = cli("runs", "show", run.id)
    assert shown.exit_code == 0, shown.output
    assert "status    blocked" in shown.output
    assert "recorded step 'ship'" in shown.output and "step 'fraud_check'" in shown.output

    (post,) = durable_http_receiver.wait_for(1, timeout=15, path="/blocked")
    body = post["json"]
    assert body["rule"] == "blocked runs" and body["event"]["type"] == "workflow.blocked"
    data = body["event"]["data"]
    assert data["run_id"] == run.id and data["workflow_name"] == "tests.deploys.order"
    assert "fraud_check" in data["error"]["message"]


def test_blocked_then_resumed_after_the_fix_goes_on_where_it_was(
    durable_app, worker, durable_wait_for_status, code, cli, counter
):
    run = _blocked_by_a_breaking_deploy(code, durable_wait_for_status)
    length = len(run.events())

    ext = extension_for(durable_app)
    before = ext.redis.zscore(ext.keys.timers(), f"wake:{run.id}")
    still = cli("runs", "resume", run.id)  # the code is still broken: nothing written
    assert still.exit_code == 0, still.output
    _wait_for_retry_timer_moved(ext, run.id, before)
    assert run.status() == "blocked" and len(run.events()) == length

    code["version"] = 2  # the fix: the change behind patched()
    resumed = cli("runs", "resume", run.id)
    assert resumed.exit_code == 0 and "sent" in resumed.output, resumed.output
    assert run.result(timeout=15) == {"shipped": "shipped-7", "checked": False, "version": 2}
    assert counter("fraud_check") == 0 and counter("ship") == 1
    assert not ext.redis.sismember(ext.keys.blocked_runs(), run.id)


def test_runs_fail_ends_a_blocked_run_with_its_reason(
    durable_app, worker, durable_wait_for_status, code, cli
):
    run = _blocked_by_a_breaking_deploy(code, durable_wait_for_status)
    failed = cli("runs", "fail", run.id)
    assert failed.exit_code == 0, failed.output
    with pytest.raises(NonDeterminismError, match="fraud_check"):
        run.result(timeout=5)
    again = cli("runs", "fail", run.id)
    assert again.exit_code != 0 and "not blocked" in again.output


def test_a_run_whose_workflow_is_missing_is_blocked_then_runs_once_it_is_deployed(
    durable_app, worker, durable_wait_for_status, cli
):
    run = celery_durable.start("tests.deploys.later", 5)
    durable_wait_for_status(run, "blocked", timeout=15)
    assert "not registered" in run.events()[-1]["data"]["error"]["message"]
    try:

        @workflow(name="tests.deploys.later")
        def later(n: int) -> int:
            return n * 2

        assert cli("runs", "resume", run.id).exit_code == 0
        assert run.result(timeout=15) == 10
    finally:
        registry._registry.pop("tests.deploys.later", None)


def test_a_starting_worker_tries_the_blocked_runs_again(durable_app, durable_wait_for_status, code):
    with start_worker(durable_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        run = _blocked_by_a_breaking_deploy(code, durable_wait_for_status)
    code["version"] = 2  # deployed with the fix: the new worker takes the run on
    with start_worker(durable_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        # Its "go" came before it was blocked: it goes on to the end.
        assert run.result(timeout=15) == {"shipped": "shipped-7", "checked": False, "version": 2}


def test_a_starting_worker_sends_a_bounded_number_of_blocked_runs(durable_app):
    """After a bad deploy there may be thousands: each starting worker sends at most
    `limit` of them, and forgets ids of runs that are no longer blocked."""
    ext = extension_for(durable_app)
    for n in range(5):
        ext.redis.hset(ext.keys.run_meta(f"b{n}"), "status", "blocked")
        ext.redis.sadd(ext.keys.blocked_runs(), f"b{n}")
    ext.redis.hset(ext.keys.run_meta("done"), "status", "completed")
    ext.redis.sadd(ext.keys.blocked_runs(), "done")
    assert retry_blocked_runs(ext, limit=100) == 5
    assert ext.redis.smembers(ext.keys.blocked_runs()) == {f"b{n}".encode() for n in range(5)}
    assert retry_blocked_runs(ext, limit=2) == 2


def _wait_for_retry_timer_moved(ext, run_id: str, before: float) -> None:
    """Wait until the worker has handled the resume: it set the retry timer again, later."""
    deadline = time.monotonic() + 10
    while ext.redis.zscore(ext.keys.timers(), f"wake:{run_id}") == before:
        assert time.monotonic() < deadline, "the resumed run was not handled in time"
        time.sleep(0.02)


def test_a_blocked_run_still_times_out_and_its_retries_write_nothing(
    durable_app, worker, durable_wait_for_status, durable_time_skip, code
):
    run = celery_durable.start(deploys.bounded, 8)
    durable_wait_for_status(run, "waiting")
    code["version"] = 4
    celery_durable.send_event(run.id, "go")
    durable_wait_for_status(run, "blocked", timeout=15)
    length = len(run.events())

    ext = extension_for(durable_app)
    retry_at = ext.redis.zscore(ext.keys.timers(), f"wake:{run.id}")
    durable_time_skip.advance("6m")  # past durable_blocked_retry_after: tried, still diverges
    wait_until = time.monotonic() + 10
    while ext.redis.zscore(ext.keys.timers(), f"wake:{run.id}") == retry_at:
        assert time.monotonic() < wait_until, "the blocked run was not tried again"
        time.sleep(0.02)
    assert run.status() == "blocked" and len(run.events()) == length

    durable_time_skip.advance("1h")  # past its max_duration
    durable_wait_for_status(run, "timed_out", timeout=15)


def test_a_blocked_run_that_lost_its_retry_timer_is_listed_as_stuck(
    durable_app, worker, durable_wait_for_status, code, cli
):
    run = _blocked_by_a_breaking_deploy(code, durable_wait_for_status)
    ext = extension_for(durable_app)
    ext.redis.zrem(ext.keys.timers(), f"wake:{run.id}")  # as if its tidying-up failed
    listed = json.loads(cli("runs", "list", "--status", "stuck", "--json").output)
    (stuck,) = listed["runs"]
    assert stuck["id"] == run.id and stuck["reason"] == "blocked with no retry timer"
    json_blocked = json.loads(cli("runs", "list", "--status", "blocked", "--json").output)
    assert [r["id"] for r in json_blocked["runs"]] == [run.id]
