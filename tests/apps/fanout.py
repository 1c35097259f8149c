"""A Celery app for the fan-out tests, for `celery -A tests.apps.fanout worker`.

Runs execute on the default queue (`celery`); the `render` steps run on
queue `render` (`RENDER`), which a test may give to a worker of its own
(`-Q render`). Detection is quick (`HEARTBEAT_INTERVAL`, `WORKER_TIMEOUT`)
so that a killed worker is recovered within about four seconds.

Every step body counts its executions per run and item before it does its
work (a set of tokens, like `tests.apps.faulty`: not counted twice when the
Redis client sends the command again): a body killed in the middle has
counted itself. `entered_key`/`finished_key` record which items began and
which ended, for the cancel test.

`lean` is a second app module on the same journal that defines none of
these steps: a worker of it on queue `lean` gets a step whose code it lacks.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import redis
from celery import Celery

from celery_durable import gather, get_context, step, workflow
from celery_durable.extension import extension_for

from . import NOWHERE_URL, REDIS_URL_ENV, make_quick_app

REDISPATCH_AFTER = 5.0
RENDER = "render"
LEAN = "lean"


def make_app(redis_url: str, main: str = "tests.apps.fanout", **conf: Any) -> Celery:
    """A Celery app on `redis_url` (broker and journal) with celery_durable installed."""
    return make_quick_app(main, redis_url, redispatch_after=REDISPATCH_AFTER, **conf)


app = make_app(os.environ.get(REDIS_URL_ENV) or NOWHERE_URL)


def count_key(run_id: str, item: Any) -> str:
    return f"test:fanout:count:{run_id}:{item}"


def entered_key(run_id: str) -> str:
    """Items whose body began (a set)."""
    return f"test:fanout:entered:{run_id}"


def finished_key(run_id: str) -> str:
    """Items whose body ran to its end (a set)."""
    return f"test:fanout:finished:{run_id}"


def gate_key(run_id: str, item: Any) -> str:
    """The list that lets item `item` of a run's `gate` step go on: RPUSH anything."""
    return f"test:fanout:gate:{run_id}:{item}"


def counts(client: redis.Redis, run_id: str, items: list[Any]) -> list[int]:
    """How often the body of each item ran."""
    pipe = client.pipeline(transaction=False)
    for item in items:
        pipe.scard(count_key(run_id, item))
    return [int(n) for n in pipe.execute()]


def _enter(item: Any) -> int:
    run_id = get_context().run_id
    pipe = extension_for().redis.pipeline(transaction=True)
    pipe.sadd(count_key(run_id, item), uuid.uuid4().hex)
    pipe.scard(count_key(run_id, item))
    pipe.sadd(entered_key(run_id), str(item))
    return int(pipe.execute()[1])


def _finish(item: Any) -> None:
    extension_for().redis.sadd(finished_key(get_context().run_id), str(item))


@step(name="fanout.render", queue=RENDER)
def render(frame: int, delay: float = 0.0) -> str:
    """A frame of `delay` seconds, on queue `render`."""
    _enter(frame)
    if delay:
        time.sleep(delay)
    _finish(frame)
    return f"frame-{frame}.png"


@step(name="fanout.gate", queue=RENDER)
def gate(item: int, timeout: float = 30.0) -> int:
    """Blocks until the test opens its gate (`gate_key`); returns how often it began."""
    entered = _enter(item)
    run_id = get_context().run_id
    if extension_for().redis.blpop([gate_key(run_id, item)], timeout=timeout) is None:
        raise TimeoutError(f"the gate of item {item} of run {run_id} stayed shut {timeout}s")
    _finish(item)
    return entered


@step(name="fanout.flaky", queue=RENDER, max_retries=1, retry_delay=0)
def flaky(item: int, bad: list[int]) -> int:
    """Items in `bad` fail every attempt (retried once); the others return themselves."""
    _enter(item)
    if item in bad:
        raise ValueError(f"item {item} cannot be rendered")
    _finish(item)
    return item


@step(name="fanout.slow_retry", queue=RENDER, max_retries=1, retry_delay="1.5s")
def slow_retry(item: int) -> dict[str, Any]:
    """Fails its first attempt; the retry, 1.5 s later, is a durable timer's message."""
    entered = _enter(item)
    if entered == 1:
        raise ConnectionError("the render farm hung up")
    return {"entered": entered, "pid": os.getpid()}


@step(name="fanout.context", queue=RENDER)
def context() -> dict[str, Any]:
    ctx = get_context()
    return {"run_id": ctx.run_id, "workflow": ctx.workflow_name, "key": ctx.idempotency_key}


@step(name="fanout.overtime", queue=RENDER, time_limit=1.5, max_retries=1, retry_delay=0)
def overtime(seconds: float) -> str:
    """Runs over its hard time limit (the pool kills it); retried once, same fate."""
    _enter(0)
    time.sleep(seconds)
    return "in time"


@step(name="fanout.upload")
def upload(paths: list[str]) -> str:
    """Inline: in the run's own task."""
    return f"{len(paths)} files"


@step(name="fanout.elsewhere", queue=LEAN)
def elsewhere() -> str:
    return "never"


@workflow(name="fanout.render_movie")
def render_movie(frames: list[int], delay: float = 0.0) -> dict[str, Any]:
    """The README's example: a map, a plain call, two spawns and a gather, an inline step."""
    paths = gather(*(render.spawn(frame, delay) for frame in frames))
    cover = render(-1)
    h1, h2 = render.spawn(-2), upload.spawn(["a"])
    a, b = gather(h1, h2)
    return {"paths": paths, "cover": cover, "a": a, "b": b, "upload": upload([*paths, cover])}


@workflow(name="fanout.map")
def render_map(frames: list[int], delay: float = 0.0) -> list[str]:
    return gather(*(render.spawn(frame, delay) for frame in frames))


@workflow(name="fanout.gated")
def gated(items: int, timeout: float = 30.0) -> list[int]:
    return gate.map(range(items))


@workflow(name="fanout.failing")
def failing(items: int, bad: list[int]) -> dict[str, Any]:
    handles = [flaky.spawn(i, bad) for i in range(items)]
    try:
        return {"results": gather(*handles), "error": None}
    except ValueError as exc:
        return {"results": None, "error": str(exc)}


@workflow(name="fanout.retry")
def retry_later() -> dict[str, Any]:
    return slow_retry(0)


@workflow(name="fanout.context")
def in_context() -> dict[str, Any]:
    return context()


@workflow(name="fanout.overtime")
def overtime_flow(seconds: float) -> str:
    try:
        return overtime(seconds)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@workflow(name="fanout.missing")
def missing() -> str:
    return elsewhere()


@workflow(name="fanout.async_gather")
async def async_gather(frames: list[int], delay: float = 0.0) -> list[str]:
    rendered = await asyncio.gather(*(render(frame, delay) for frame in frames))
    return [*rendered, upload(list(rendered))]
