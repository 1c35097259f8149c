"""Durations that are not finite, and `sleep(None)`, are refused before they reach Redis."""

from __future__ import annotations

import pytest

import celery_durable
from celery_durable import workflow
from celery_durable.errors import ConfigurationError
from celery_durable.extension import extension_for
from celery_durable.options import parse_duration
from tests.test_suspend import approval_or_default, nap

NOT_FINITE = [float("nan"), float("inf"), float("-inf"), "9" * 400 + "s"]


@pytest.mark.parametrize("value", NOT_FINITE)
def test_parse_duration_refuses_what_is_not_finite(value):
    with pytest.raises(ConfigurationError, match=r"max_duration: a duration must be a finite"):
        parse_duration(value, field="max_duration")


def test_max_duration_nan_is_refused_at_definition():
    with pytest.raises(ConfigurationError, match=r"max_duration: a duration must be a finite"):

        @workflow(name="tests.never_defined", max_duration=float("nan"))
        def never_defined() -> None: ...


@pytest.mark.parametrize(
    ("workflow_fn", "argument", "message"),
    [
        (nap, float("nan"), r"sleep\(duration\): a duration must be a finite number, got nan"),
        (nap, float("inf"), r"sleep\(duration\): a duration must be a finite number, got inf"),
        (nap, None, r"sleep\(duration\): a duration is required, got None"),
        (
            approval_or_default,
            float("nan"),
            r"wait_for_event\(timeout\): a duration must be a finite number",
        ),
    ],
)
def test_a_run_asking_for_a_bad_wait_fails_and_no_timer_is_written(
    durable_app, durable_worker, redis_client, workflow_fn, argument, message
):
    run = celery_durable.start(workflow_fn, argument)
    with pytest.raises(ConfigurationError, match=message):
        run.result(timeout=15)
    assert run.status() == "failed"
    timers = redis_client.zrange(extension_for(durable_app).keys.timers(), 0, -1, withscores=True)
    assert all(score < float("inf") for _, score in timers), timers
    assert [member for member, _ in timers if run.id.encode() in member] == []
