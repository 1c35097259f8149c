"""A Celery app with sleeping workflows, for `celery -A tests.apps.sleepy worker`.

Every step body counts its executions per run, with INCR on
`test:count:<step>:<run id>` (see `count_key`), so a test can check that each
body ran exactly once per run however many workers and restarts it saw.

The test process builds its own client app with `make_app(url)` (the same
configuration) and starts runs from it; the workflows are registered by name
in the process-wide registry, so importing this module is enough for that.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_durable import get_context, sleep, step, workflow
from celery_durable.extension import extension_for

from . import NOWHERE_URL, REDIS_URL_ENV, make_worker_app, wait_at_gate
from . import gate_key as gate_key  # the tests open gates through the app module


def make_app(redis_url: str, main: str = "tests.apps.sleepy") -> Celery:
    """A Celery app on `redis_url` (broker and journal) with celery_durable installed."""
    return make_worker_app(main, redis_url)


app = make_app(os.environ.get(REDIS_URL_ENV) or NOWHERE_URL)


def count_key(step_name: str, run_id: str) -> str:
    return f"test:count:{step_name}:{run_id}"


def _count(step_name: str) -> int:
    key = count_key(step_name, get_context().run_id)
    return int(extension_for().redis.incr(key))


@step(name="sleepy.step_a")
def step_a() -> int:
    return _count("step_a")


@step(name="sleepy.step_b")
def step_b() -> int:
    return _count("step_b")


@step(name="sleepy.after_nap")
def after_nap() -> int:
    return _count("after_nap")


@step(name="sleepy.gate")
def gate(timeout: float) -> int:
    """Blocks until the test opens the gate (see `gate_key`): a step to kill a worker in."""
    entered = _count("gate")
    wait_at_gate(timeout)
    return entered


@workflow(name="sleepy.a_sleep_b")
def a_sleep_b(seconds: float) -> dict:
    """step A, a durable sleep of `seconds`, step B."""
    a = step_a()
    sleep(seconds)
    b = step_b()
    return {"run_id": get_context().run_id, "a": a, "b": b}


@workflow(name="sleepy.a_gate_b")
def a_gate_b(timeout: float = 30.0) -> dict:
    """step A, a step that blocks until its gate opens, step B."""
    a = step_a()
    entered = gate(timeout)
    b = step_b()
    return {"run_id": get_context().run_id, "a": a, "gate": entered, "b": b}


@workflow(name="sleepy.nap_then_step")
def nap_then_step(seconds: float) -> dict:
    """A durable sleep of `seconds`, then one step."""
    sleep(seconds)
    return {"run_id": get_context().run_id, "after_nap": after_nap()}
