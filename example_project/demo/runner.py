"""The demo's story, in order: Redis, worker, runs, their accounts, shutdown."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from kombu.utils.url import maybe_sanitize_url

from celery_durable.contrib.redis_server import RedisServer

from ..celery import app, use_redis
from ..services import DECLINED_CARD
from ..workflows import ReturnOrder, process_order
from .errors import DemoError
from .report import render_run
from .scenario import (
    ORDERS,
    Tracked,
    check_declined_order,
    check_deduplicated,
    check_paid_order,
    check_return,
    verify,
    wait_all,
)
from .worker import WorkerProcess

WORKER_READY_TIMEOUT = 30.0
RUNS_TIMEOUT = 30.0


def say(text: str = "") -> None:
    print(text, flush=True)


def main() -> int:
    """Run the demo; 0 if everything went as expected, else 1 with the reason on stderr."""
    began = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_demo(began)
    except DemoError as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception:
        traceback.print_exc()
        print("\ndemo FAILED: unexpected error (traceback above)", file=sys.stderr, flush=True)
        return 1
    say("\nsummary")
    for text in summary:
        say(f"  {text}")
    say(f"\ndemo OK in {time.monotonic() - began:.1f} s")
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so the worker and Redis are still stopped."""
    raise KeyboardInterrupt


def run_demo(began: float) -> list[str]:
    """Redis, then the worker, then the runs; everything stopped in reverse order."""
    with ExitStack() as stack:
        url = _redis(stack)
        use_redis(url)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="durable-demo-")))
        worker = stack.enter_context(WorkerProcess(url, workdir / "worker.log"))
        say(f"worker pid {worker.pid}: celery -A example_project worker (log {worker.log_path})")
        line = worker.wait_ready(app, timeout=WORKER_READY_TIMEOUT)
        if f"journal at {maybe_sanitize_url(url)} " not in line:
            raise DemoError(f"the worker's journal is not at {maybe_sanitize_url(url)}: {line}")
        say(f"worker ready after {time.monotonic() - began:.1f} s: {line}")
        summary = play(batch=secrets.token_hex(3))
        say("\nshutting down")
    say(f"  worker stopped with exit code {worker.exit_code}; none of its processes is left")
    if worker.exit_code != 0:
        raise DemoError(f"the worker exited with code {worker.exit_code} on SIGTERM")
    return summary


def _redis(stack: ExitStack) -> str:
    """The Redis from the environment, else a private redis-server stopped on exit."""
    url = os.environ.get("DURABLE_REDIS_URL") or os.environ.get("REDIS_URL")
    if not url:
        server = stack.enter_context(RedisServer())
        say(f"redis: private redis-server at {server.url}")
        return server.url
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise DemoError(f"cannot reach the Redis at {maybe_sanitize_url(url)}: {exc}") from None
    finally:
        client.close()
    say(f"redis: {maybe_sanitize_url(url)} (from the environment)")
    return url


def play(batch: str) -> list[str]:
    """Start the runs, wait for them, print their accounts; return the summary.

    Idempotency keys carry `batch`, so running the demo again against a
    long-lived Redis starts new runs instead of finding the last demo's.
    """
    say(f"\nstarting orders (batch {batch})")
    orders = [_start_order(order, batch) for order in ORDERS]
    # A client that timed out and submits again: the same key finds the same run.
    first = orders[0]
    again = process_order.start(ORDERS[0], idempotency_key=_order_key(ORDERS[0], batch))
    say(f"  {first.label}  started again with the same key: run {again.id}")
    wait_all(orders, timeout=RUNS_TIMEOUT)

    tracked = list(orders)
    problems = check_deduplicated(first.run, again)
    if isinstance(first.outcome, dict):
        say(f"\nreturning {first.label} (the class-form workflow ReturnOrder)")
        run = ReturnOrder.start(
            ORDERS[0], first.outcome["charge"], idempotency_key=f"return-{ORDERS[0]['id']}/{batch}"
        )
        returned = Tracked(f"return of {first.label}", run, "completed", check_return)
        say(f"  return      started run {run.id}")
        wait_all([returned], timeout=RUNS_TIMEOUT)
        tracked.append(returned)
    else:
        problems.append(f"{first.label} did not complete, so it could not be returned")

    for item in tracked:
        say()
        for text in render_run(item.label, item.run, item.error):
            say(text)

    for item in tracked:
        problems += verify(item)
    if problems:
        raise DemoError("runs did not end as expected:\n  " + "\n  ".join(problems))
    return _summary(tracked, first)


def _order_key(order: dict[str, Any], batch: str) -> str:
    return f"order-{order['id']}/{batch}"


def _start_order(order: dict[str, Any], batch: str) -> Tracked:
    declined = order["card"] == DECLINED_CARD
    run = process_order.start(order, idempotency_key=_order_key(order, batch))
    note = "  (its card will be declined)" if declined else ""
    say(f"  order {order['id']}  started run {run.id}{note}")
    if declined:
        return Tracked(f"order {order['id']}", run, "failed", check_declined_order)
    return Tracked(f"order {order['id']}", run, "completed", check_paid_order)


def _summary(tracked: list[Tracked], deduplicated: Tracked) -> list[str]:
    statuses = Counter(item.run.status() for item in tracked)
    events = [e for item in tracked for e in item.events]
    retries = sum(e["type"] == "step.retrying" for e in events)
    steps = sum(e["type"] == "step.completed" for e in events)
    declined = [item for item in tracked if item.expect == "failed"]
    return [
        f"runs: {len(tracked)} ("
        + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        + "), each as expected",
        f"deduplication: {deduplicated.label} started 2 times -> 1 run "
        f"({deduplicated.run.id}), executed once",
        f"steps: {steps} completed, each recorded once; {retries} failed attempts retried "
        "by their step's policy (the gateway's first-call timeouts)",
        *(
            f"declined card: {item.label} failed with PaymentDeclined, its stock released"
            for item in declined
        ),
    ]
