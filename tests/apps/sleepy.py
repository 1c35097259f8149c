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

import celery_durable
from celery_durable import get_context, sleep, step, workflow
from celery_durable.extension import extension_for

from . import NOWHERE_URL, REDIS_URL_ENV


def make_app(redis_url: str, main: str = "tests.apps.sleepy") -> Celery:
    """A Celery app on `redis_url` (broker and journal) with celery_durable installed."""
    # Not made current on import: the test process makes its client app current
    # itself, and a worker makes the app it loads current anyway.
    app = Celery(main, broker=redis_url, set_as_current=False)
    app.conf.update(
        durable_redis_url=redis_url,
        # A run's task holds its pool slot while its steps run inline: take one
        # message at a time, so a busy child does not sit on runs another could take.
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
    celery_durable.install(app)
    return app


app = make_app(os.environ.get(REDIS_URL_ENV) or NOWHERE_URL)


def count_key(step_name: str, run_id: str) -> str:
    return f"test:count:{step_name}:{run_id}"


def gate_key(run_id: str) -> str:
    """The list that opens a run's `gate` step: RPUSH anything onto it."""
    return f"test:gate:{run_id}"


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
    run_id = get_context().run_id
    if extension_for().redis.blpop([gate_key(run_id)], timeout=timeout) is None:
        raise TimeoutError(f"the gate of run {run_id} was not opened within {timeout}s")
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
