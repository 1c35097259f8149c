"""Small helpers shared by the timer benchmarks: a private Redis, a real worker.

The same approach as `benchmarks/throughput.py` (whose worker helper is bound
to `benchmarks.bench_app`): a private `redis-server` from
`celery_durable.contrib.redis_server.RedisServer` unless a URL is given, and a
`celery worker --pool prefork` subprocess in its own session, ready once a
pool process answered a ping task, always stopped (killed past a timeout).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import celery
import redis
from celery import Task
from celery.exceptions import TimeoutError as CeleryTimeoutError

from celery_durable.contrib.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Deadline:
    def __init__(self, seconds: float, what: str):
        self.end = time.monotonic() + seconds
        self.what = what
        self.seconds = seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{self.what} took more than {self.seconds:g}s")
        return left


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind through `finally` blocks, which stop the worker and Redis."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


@contextlib.contextmanager
def redis_url(given: str | None) -> Iterator[str]:
    """`given`, or the URL of a private redis-server stopped on exit."""
    if given:
        yield given
        return
    with RedisServer() as server:
        yield server.url


@contextlib.contextmanager
def celery_worker(
    app_module: str,
    url: str,
    *,
    url_env: str,
    ping: Task,
    concurrency: int = 2,
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real prefork worker of `app_module` on `url`, ready on entry, stopped on exit."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_module,
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(concurrency),
        "-l",
        "warning",
        *extra_args,
    ]
    env = {**os.environ, **(extra_env or {}), url_env: url}
    with tempfile.TemporaryFile() as output:
        # Its own session, so that a kill can reach the pool processes too.
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        failed = True
        try:
            wait_until_ready(process, ping, Deadline(READY_TIMEOUT, "the worker to start"))
            yield process
            failed = False
        finally:
            stop_worker(process)
            if failed:
                log(f"worker output (last lines):\n{tail(output)}")


def wait_until_ready(process: subprocess.Popen[bytes], ping: Task, deadline: Deadline) -> None:
    answer = ping.delay()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with status {process.returncode}")
        try:
            answer.get(timeout=min(0.5, deadline.remaining()))
            return
        except CeleryTimeoutError:
            continue


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown; past STOP_TIMEOUT, kill the worker and its pool processes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log("the worker did not stop in time; killing it")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the group is gone after a clean stop
    process.wait(STOP_TIMEOUT)


def tail(output: IO[bytes], limit: int = 4000) -> str:
    output.seek(0)
    return output.read().decode(errors="replace")[-limit:]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank: a value that was measured."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def environment(url: str, concurrency: int) -> dict[str, Any]:
    """What a benchmark ran on, printed and kept with its figures."""
    client = redis.Redis.from_url(url)
    try:
        redis_version = client.info("server")["redis_version"]
    finally:
        client.close()
    return {
        "redis": redis_version,
        "python": platform.python_version(),
        "celery": celery.__version__,
        "celery_durable": version("celery-durable"),
        "pool": "prefork",
        "concurrency": concurrency,
        "cpus": os.cpu_count(),
    }
