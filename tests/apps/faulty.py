"""A Celery app for the fault tests, for `celery -A tests.apps.faulty worker`.

Detection is quick here (`HEARTBEAT_INTERVAL`, `WORKER_TIMEOUT`,
`REDISPATCH_AFTER`), so that a killed worker is recovered within about four
seconds and the suite stays fast.

Every step body counts its executions per run and position *before* it
does its work: a step killed in the middle has counted itself, and when it
runs again after a takeover its count is 2. An execution adds a token of its
own to the set `test:count:<run id>:<position>` (`count_key`), and the count
is the set's size: unlike INCR, that is not counted twice when the Redis
client sends the command again after losing its reply (a Redis restart). A
test reads all of a run's counts with `step_counts`.

A delivery can be held in the pool process *before* its execution claims
the run (a `task_prerun` hook, see `_hold_before_claim`) until the test
releases it: a worker or pool process killed there dies holding a run it
has received but not claimed. The first delivery of a `held` run is held,
and so is the next delivery of any run the test flagged with `hold_next`.

The test process builds its own client app with `make_app(url)` and starts
runs from it; the workflows are registered by name in the process-wide
registry, so importing this module is enough for that.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import redis
from celery import Celery
from celery.signals import task_prerun

from celery_durable import get_context, sleep, step, wait_for_event, workflow
from celery_durable.errors import EventTimeoutError
from celery_durable.extension import RUN_TASK_NAME, extension_for

from . import HEARTBEAT_INTERVAL as HEARTBEAT_INTERVAL  # the tests read them here
from . import NOWHERE_URL, REDIS_URL_ENV, make_quick_app, wait_at_gate
from . import WORKER_TIMEOUT as WORKER_TIMEOUT
from . import gate_key as gate_key  # the tests open gates through the app module

REDISPATCH_AFTER = 1.0


def make_app(redis_url: str, main: str = "tests.apps.faulty", **conf: Any) -> Celery:
    """A Celery app on `redis_url` (broker and journal) with celery_durable installed."""
    return make_quick_app(main, redis_url, redispatch_after=REDISPATCH_AFTER, **conf)


app = make_app(os.environ.get(REDIS_URL_ENV) or NOWHERE_URL)


def count_key(run_id: str, position: int) -> str:
    return f"test:count:{run_id}:{position}"


def held_key(run_id: str) -> str:
    """Set (to the pool process's pid) once a delivery of the run stopped before its claim."""
    return f"test:held:{run_id}"


def hold_next(client: redis.Redis, run_id: str) -> None:
    """Hold the next delivery of the run before its claim (once)."""
    client.delete(held_key(run_id))
    client.set(_hold_flag(run_id), 1)


def _hold_flag(run_id: str) -> str:
    return f"test:hold-next:{run_id}"


def release_key(run_id: str) -> str:
    """The list that lets a `held` run go on to its claim: RPUSH anything onto it."""
    return f"test:release:{run_id}"


def step_counts(client: redis.Redis, run_id: str, steps: int) -> list[int]:
    """How often the body of each of a run's first `steps` positions ran."""
    pipe = client.pipeline(transaction=False)
    for position in range(steps):
        pipe.scard(count_key(run_id, position))
    return [int(n) for n in pipe.execute()]


def _count(position: int) -> int:
    key = count_key(get_context().run_id, position)
    pipe = extension_for().redis.pipeline(transaction=True)
    pipe.sadd(key, uuid.uuid4().hex)  # the same token when the client sends it again
    pipe.scard(key)
    return int(pipe.execute()[1])


@step(name="faulty.work")
def work(position: int, delay: float) -> int:
    """Count, then take `delay` seconds: a step a kill can land in."""
    entered = _count(position)
    if delay > 0:
        time.sleep(delay)
    return entered


@step(name="faulty.gate")
def gate(position: int, timeout: float) -> int:
    """Count, then block until the test opens the gate (see `gate_key`)."""
    entered = _count(position)
    wait_at_gate(timeout)
    return entered


@workflow(name="faulty.steps")
def steps(count: int = 10, delay: float = 0.03) -> list[int]:
    """`count` steps of `delay` seconds; each returns how often its body was entered."""
    return [work(position, delay) for position in range(count)]


@workflow(name="faulty.gated")
def gated(timeout: float = 30.0) -> list[int]:
    """A step, a step that blocks until its gate opens, a step (positions 0, 1, 2)."""
    return [work(0, 0.0), gate(1, timeout), work(2, 0.0)]


@workflow(name="faulty.nap")
def nap(seconds: float) -> list[int]:
    """A step, a durable sleep of `seconds` (position 1), a step (position 2)."""
    first = work(0, 0.0)
    sleep(seconds)
    return [first, work(2, 0.0)]


@workflow(name="faulty.two_waits")
def two_waits(name: str, second_timeout: float) -> list[Any]:
    """Wait for event `name` twice; the second wait gives None after `second_timeout`."""
    first = wait_for_event(name)
    try:
        second = wait_for_event(name, timeout=second_timeout)
    except EventTimeoutError:
        second = None
    return [first, second]


@workflow(name="faulty.held")
def held(count: int = 3) -> list[int]:
    """Like `steps` (no delay), but its first delivery stops before the claim."""
    return [work(position, 0.0) for position in range(count)]


@task_prerun.connect(weak=False)
def _hold_before_claim(sender: Any = None, args: Any = None, **_: Any) -> None:
    """Fault injection, in the pool process: hold a delivery before its claim.

    Runs before the task body, so before `execute_run` claims the run: the
    run is received (prefetched, then started) but not claimed by this
    delivery. Held: the first delivery of a `held` run, and the next delivery
    of a run flagged with `hold_next`.
    """
    if getattr(sender, "name", None) != RUN_TASK_NAME or sender.app is not app or not args:
        return  # not a run task of a worker of this module (the test process imports it too)
    client = extension_for(app).redis
    run_id = args[0]
    if client.delete(_hold_flag(run_id)):  # flagged: this delivery, once
        client.set(held_key(run_id), os.getpid())
    else:
        name = extension_for(app).journal.meta(run_id).get("name")
        first = name == held.definition.name and client.set(  # the first delivery only
            held_key(run_id), os.getpid(), nx=True
        )
        if not first:
            return
    client.blpop([release_key(run_id)], timeout=60)
