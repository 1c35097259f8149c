"""start() records a run but cannot send its message: a worker sends it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from celery import Celery

import celery_durable
from celery_durable.extension import extension_for
from tests.apps import NOWHERE_URL, client_side, faulty
from tests.faults import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def cut_off_client(durable_redis_url: str) -> Iterator[Celery]:
    """A client whose journal is reachable but whose broker is not."""
    app = faulty.make_app(
        durable_redis_url,
        main="faults-cut-off-client",
        broker_url=NOWHERE_URL,
        task_publish_retry=False,
        # Else kombu tries to connect for about six seconds before it gives up.
        broker_transport_options={"max_retries": 0},
    )
    with client_side(app):
        yield app


def test_a_run_whose_dispatch_failed_is_sent_by_a_worker_process(
    cut_off_client, workers, redis_client, caplog
):
    (worker,) = workers.start_many(1, concurrency=1)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="celery_durable"):
        run = celery_durable.start(faulty.steps, 3, 0.0)
    assert time.monotonic() - began < faulty.REDISPATCH_AFTER
    assert "could not send run" in caplog.text
    assert run.status() == "pending"

    assert run.result(timeout=faulty.REDISPATCH_AFTER + 8) == [1, 1, 1]
    took = time.monotonic() - began
    # Sent by the worker's timer poller once `durable_redispatch_after` passed.
    assert faulty.REDISPATCH_AFTER <= took < faulty.REDISPATCH_AFTER + 5, took
    assert faulty.step_counts(redis_client, run.id, 3) == [1, 1, 1]
    timers = extension_for(cut_off_client).timers  # dropped right after the final event
    wait_until(lambda: timers.pending() == 0, timeout=5, what="no timer left")
    assert worker.log_text().count(f"run {run.id}") == 0  # nothing dropped or failed


def test_an_event_whose_wake_up_cannot_be_sent_still_wakes_the_run(
    client_app, cut_off_client, workers, caplog
):
    workers.start_many(1, concurrency=1)
    client_app.set_current()
    run = celery_durable.start(faulty.two_waits, "go", 3.0)
    wait_until(lambda: run.status() == "waiting", timeout=10, what="the run waiting")

    cut_off_client.set_current()
    with caplog.at_level(logging.WARNING, logger="celery_durable"):
        celery_durable.send_event(run.id, "go", {"n": 1})  # recorded; no error for the message
    assert "could not wake run" in caplog.text
    client_app.set_current()
    # Before: send_event raised after recording the event, and the run waited for ever.
    assert run.result(timeout=faulty.REDISPATCH_AFTER + 3.0 + 8) == [{"n": 1}, None]
