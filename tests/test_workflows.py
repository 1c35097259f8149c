"""Workflows and steps executed by a real in-process worker on a real Redis."""

from __future__ import annotations

import asyncio

import pytest

import celery_durable
from celery_durable import FatalError, RetryableError, Workflow, get_context, step, workflow
from celery_durable.extension import extension_for
from tests.steps import arithmetic, count


def test_run_completes_with_every_step_recorded_once(durable_worker, counter):
    run = celery_durable.start(arithmetic, 2, 3)
    assert run.result(timeout=15) == {"total": 5, "doubled": 10, "word": "DONE"}
    assert run.status() == "completed"
    types = [e["type"] for e in run.events()]
    assert types == [
        "workflow.started",
        "workflow.executing",
        "step.completed",
        "step.completed",
        "step.completed",
        "workflow.completed",
    ]
    assert [e["seq"] for e in run.events()] == [1, 2, 3, 4, 5, 6]
    assert (counter("add"), counter("double"), counter("shout")) == (1, 1, 1)


def test_replay_returns_recorded_results_without_running_bodies(
    durable_app, durable_worker, counter
):
    """A run whose journal already holds two steps (as if its worker died)."""
    journal = extension_for(durable_app).journal
    journal.create(
        "replayed",
        "tests.arithmetic",
        {"name": "tests.arithmetic", "args": [2, 3], "kwargs": {}, "idempotency_key": None},
    )
    journal.append(
        "replayed",
        1,
        [
            (
                "step.completed",
                {
                    "position": 0,
                    "name": "add",
                    "attempt": 1,
                    "result": 500,
                    "started_at": 0.0,
                    "duration": 0.0,
                },
            ),
            (
                "step.completed",
                {
                    "position": 1,
                    "name": "double",
                    "attempt": 1,
                    "result": 7,
                    "started_at": 0.0,
                    "duration": 0.0,
                },
            ),
        ],
    )
    extension_for(durable_app).dispatch("replayed")
    run = celery_durable.get_run("replayed")
    # The recorded (deliberately wrong) values prove the bodies did not run.
    assert run.result(timeout=15) == {"total": 500, "doubled": 7, "word": "DONE"}
    assert (counter("add"), counter("double"), counter("shout")) == (0, 0, 1)


def test_redelivered_message_of_a_finished_run_changes_nothing(
    durable_app, durable_worker, counter, processed
):
    run = celery_durable.start(arithmetic, 1, 1)
    run.result(timeout=15)
    before = run.events()
    extension_for(durable_app).dispatch(run.id)
    processed(run.id, times=2)
    assert run.events() == before
    assert counter("add") == 1


def test_step_retries_follow_the_policy_with_backoff(durable_worker, counter):
    run = celery_durable.start(flaky_workflow, 3)
    assert run.result(timeout=15) == "ok after 3"
    retries = [e for e in run.events() if e["type"] == "step.retrying"]
    assert [r["data"]["attempt"] for r in retries] == [1, 2]
    assert [r["data"]["delay"] for r in retries] == pytest.approx([0.1, 0.2])
    assert retries[0]["data"]["error"]["message"] == "attempt 1"
    completed = next(e for e in run.events() if e["type"] == "step.completed")
    assert completed["data"]["attempt"] == 3
    # The waits really happened: the last try came >= 0.1 + 0.2 s after the first.
    assert completed["data"]["started_at"] - retries[0]["ts"] >= 0.29
    assert counter("flaky") == 3


def test_step_that_exhausts_its_retries_fails_the_run_with_its_error(durable_worker, counter):
    run = celery_durable.start(flaky_workflow, 10)
    with pytest.raises(ConnectionError, match="attempt 3"):
        run.result(timeout=15)
    assert run.status() == "failed"
    assert counter("flaky") == 3  # max_retries=2: three attempts
    assert [e["type"] for e in run.events()][-2:] == ["step.failed", "workflow.failed"]


def test_retryable_error_sets_its_own_delay(durable_worker):
    run = celery_durable.start(retry_after_workflow)
    assert run.result(timeout=15) == "ok"
    (retry,) = [e for e in run.events() if e["type"] == "step.retrying"]
    assert retry["data"]["delay"] == pytest.approx(0.05)


def test_fatal_error_fails_at_once_without_retries(durable_worker, counter):
    run = celery_durable.start(fatal_workflow)
    with pytest.raises(FatalError, match="card declined"):
        run.result(timeout=15)
    assert counter("fatal") == 1
    assert not [e for e in run.events() if e["type"] in ("step.retrying", "workflow.retrying")]


def test_custom_error_keeps_its_type_and_message(durable_worker):
    run = celery_durable.start(custom_error_workflow)
    with pytest.raises(PaymentDeclined, match="insufficient funds") as info:
        run.result(timeout=15)
    assert info.value.args == ("insufficient funds", 402)


def test_workflow_retry_replays_completed_steps_and_reruns_failed_ones(durable_worker, counter):
    run = celery_durable.start(retried_workflow)
    assert run.result(timeout=15) == ["A", "ok on attempt 2"]
    assert counter("first") == 1  # completed in attempt 1, replayed in attempt 2
    assert counter("second") == 2
    assert "workflow.retrying" in [e["type"] for e in run.events()]


def test_workflow_error_with_no_retries_left_fails_the_run(durable_worker):
    run = celery_durable.start(plain_failure)
    with pytest.raises(ValueError, match="bad order"):
        run.result(timeout=15)


def test_workflow_may_catch_a_failed_step_and_go_on(durable_worker):
    run = celery_durable.start(catching_workflow)
    assert run.result(timeout=15) == "recovered from: no stock"


def test_async_workflow_and_steps(durable_worker, counter):
    run = celery_durable.start(async_workflow, 4)
    assert run.result(timeout=15) == 17
    assert counter("async_step") == 2


def test_class_form_with_context(durable_worker):
    run = OnboardUser.start(7, idempotency_key="user-7")
    result = run.result(timeout=15)
    assert result["run_id"] == run.id
    assert result["workflow_name"] == "tests.onboard_user"
    assert result["idempotency_key"] == "user-7"
    assert result["attempt"] == 1
    assert result["greeting"] == "HELLO 7"


def test_steps_and_workflows_run_plainly_outside_a_run(durable_app, counter):
    assert arithmetic(1, 2) == {"total": 3, "doubled": 6, "word": "DONE"}
    assert counter("add") == 1
    with pytest.raises(celery_durable.errors.NotInWorkflowError):
        get_context()


def test_result_times_out_while_the_run_goes_on(durable_app):
    run = celery_durable.start(arithmetic, 1, 2)  # no worker: it stays pending
    with pytest.raises(celery_durable.ResultTimeoutError, match="still pending"):
        run.result(timeout=0.2)
    assert run.status() == "pending"


def test_unencodable_step_result_fails_the_run_naming_the_step(durable_worker):
    run = celery_durable.start(bad_result_workflow)
    with pytest.raises(FatalError, match=r"the result of step 'bad_result'.*object"):
        run.result(timeout=15)


# -- workflows used above --------------------------------------------------------


class PaymentDeclined(Exception):
    def __init__(self, reason: str, code: int):
        super().__init__(reason, code)

    def __str__(self) -> str:
        return f"{self.args[0]} ({self.args[1]})"


@step(max_retries=2, retry_delay="0.1s", backoff=2.0)
def flaky(succeed_on: int) -> str:
    n = count("flaky")
    if n < succeed_on:
        raise ConnectionError(f"attempt {n}")
    return f"ok after {n}"


@workflow(name="tests.flaky")
def flaky_workflow(succeed_on: int) -> str:
    return flaky(succeed_on)


@step(max_retries=1, retry_delay="10s")
def retry_after_step() -> str:
    if count("retry_after") == 1:
        raise RetryableError("busy", retry_after=0.05)
    return "ok"


@workflow(name="tests.retry_after")
def retry_after_workflow() -> str:
    return retry_after_step()


@step(max_retries=5, retry_delay=0)
def fatal_step() -> None:
    count("fatal")
    raise FatalError("card declined")


@workflow(name="tests.fatal", max_retries=3)
def fatal_workflow() -> None:
    fatal_step()


@step
def declined() -> None:
    raise PaymentDeclined("insufficient funds", 402)


@workflow(name="tests.custom_error")
def custom_error_workflow() -> None:
    declined()


@step
def first() -> str:
    count("first")
    return "A"


@step
def second() -> str:
    n = count("second")
    if n == 1:
        raise RuntimeError("first attempt breaks")
    return f"ok on attempt {n}"


@workflow(name="tests.retried", max_retries=1)
def retried_workflow() -> list:
    return [first(), second()]


@workflow(name="tests.plain_failure")
def plain_failure() -> None:
    raise ValueError("bad order")


@step
def out_of_stock() -> None:
    raise LookupError("no stock")


@workflow(name="tests.catching")
def catching_workflow() -> str:
    try:
        out_of_stock()
    except LookupError as exc:
        return f"recovered from: {exc}"
    return "unreachable"


@step
async def async_step(x: int) -> int:
    count("async_step")
    await asyncio.sleep(0)
    return x * 2


@workflow(name="tests.async")
async def async_workflow(x: int) -> int:
    doubled = await async_step(x)
    return await async_step(doubled) + 1


@step
def greet(user_id: int) -> str:
    return f"hello {user_id}".upper()


class OnboardUser(Workflow):
    name = "tests.onboard_user"
    max_duration = "30d"

    def run(self, user_id: int) -> dict:
        ctx = get_context()
        return {
            "run_id": ctx.run_id,
            "workflow_name": ctx.workflow_name,
            "idempotency_key": ctx.idempotency_key,
            "attempt": ctx.attempt,
            "greeting": greet(user_id),
        }


@step
def bad_result() -> object:
    return object()


@workflow(name="tests.bad_result")
def bad_result_workflow() -> None:
    bad_result()
