"""What every benchmark shares: its `main`, a private Redis, real workers, ratios.

A benchmark is a module with a `run(url, args) -> report` and a
`print_table(report)` (see `main`); `main()` gives it the common options
(`--concurrency`, `--redis-url`, `--json`, `--quick`), a private
`redis-server` unless `--redis-url` names one, SIGTERM handling, and prints
the environment it ran on before its figures. Workers are `celery_durable.contrib.workers`
processes, ready on entry and stopped (killed past a timeout) on exit.

Every figure is printed as a ratio against plain Celery measured in the same
run, on the same Redis and machine: absolute figures from a shared machine
move from run to run, ratios much less.

Run a benchmark as `python benchmarks/<name>.py` (or `python -m
benchmarks.<name>`) from anywhere; `--quick` is a small run that shows it
works, whose figures mean little.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import celery
import redis

from celery_durable.contrib.redis_server import redis_url
from celery_durable.contrib.workers import READY_LINE, WorkerProcess, WorkerProcesses

ROOT = Path(__file__).resolve().parent.parent

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

Report = dict[str, Any]


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
    """Progress, on stderr: stdout holds only the figures."""
    print(message, file=sys.stderr, flush=True)


def wait_for(what: str, check: Callable[[], Any], deadline: Deadline, poll: float = 0.005) -> None:
    """Poll `check` until it holds; TimeoutError naming `what` past the deadline."""
    while not check():
        deadline.remaining()
        time.sleep(poll)


# -- the worker -------------------------------------------------------------------------


@contextlib.contextmanager
def celery_workers(
    app_module: str,
    url: str,
    *,
    url_env: str,
    count: int = 1,
    concurrency: int = 2,
    names: Sequence[str] | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    durable: bool = False,
) -> Iterator[list[WorkerProcess]]:
    """`count` real prefork workers of `app_module` on `url`, ready on entry, stopped on exit.

    They log at WARNING, as loaded production workers would: a line per task
    would cost more than what is measured. So readiness is a ping answered
    (and with `durable`, celery_durable's line, which needs INFO).
    """
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as logs,
        WorkerProcesses(
            url,
            logs,
            max_running=count,
            app=app_module,
            env=env,
            url_env=url_env,
            cwd=ROOT,
            loglevel="info" if durable else "warning",
            ready_line=READY_LINE if durable else None,
        ) as workers,
    ):
        try:
            yield workers.start_many(
                count, concurrency, timeout=READY_TIMEOUT, names=names, extra_args=extra_args
            )
            workers.stop_all(STOP_TIMEOUT)
        except BaseException:
            log(workers.tails())
            raise


@contextlib.contextmanager
def celery_worker(
    app_module: str, url: str, *, name: str | None = None, **options: Any
) -> Iterator[WorkerProcess]:
    """One worker, as `celery_workers` starts them."""
    with celery_workers(app_module, url, names=[name] if name else None, **options) as (worker,):
        yield worker


# -- figures ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank: a value that was measured."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline; None where there is no baseline to divide by (0 or missing)."""
    if value is None or not baseline:
        return None
    return value / baseline


def ratios(figures: Mapping[str, Any], baseline: Mapping[str, Any], keys: Sequence[str]) -> Report:
    """`ratio` of each of `keys` in `figures` against the same key in `baseline`."""
    return {key: ratio(figures[key], baseline[key]) for key in keys}


def times(value: float | None, digits: int = 2) -> str:
    """A ratio as printed: 1.23x, or n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}x"


# -- the environment ----------------------------------------------------------------------


def environment(url: str, concurrency: int) -> Report:
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
        "kombu": version("kombu"),
        "redis_py": version("redis"),
        "celery_durable": version("celery-durable"),
        "pool": "prefork",
        "concurrency": concurrency,
        "cpus": os.cpu_count(),
    }


def print_environment(env: Report) -> None:
    print(
        f"Redis {env['redis']}, Python {env['python']}, Celery {env['celery']}, "
        f"kombu {env['kombu']}, redis-py {env['redis_py']}, celery_durable "
        f"{env['celery_durable']}; worker --pool {env['pool']} --concurrency "
        f"{env['concurrency']}; {env['cpus']} CPUs"
    )


# -- main ---------------------------------------------------------------------------------


def at_least(low: float, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse `type=`: a number of `kind` not below `low`; argparse
    reports a bad one with the option's name, so no benchmark checks it."""

    def parse(text: str) -> Any:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    parse.__name__ = getattr(kind, "__name__", "number")  # argparse's "invalid int value"
    return parse


def positive(text: str) -> float:
    """An argparse `type=`: seconds above zero."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind through `finally` blocks, which stop the worker and Redis."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def main(benchmark: str, argv: Sequence[str] | None = None) -> None:
    """Run the benchmark module named `benchmark`: `bench.main(__name__)`.

    The module gives `run(url, args) -> report`; `print_table(report)` (else
    `run` prints its figures itself and there is no `--json`);
    `options(parser)`, its own arguments (bounded with `at_least`, `positive`);
    `QUICK`, the values `--quick` uses
    for those left at their defaults; optionally `TIMEOUT` (the default of a
    `--timeout` option, seconds per part), `check(args)`, what is wrong with
    the arguments together if anything, and `APPENDONLY` for its private Redis.
    """
    module = sys.modules[benchmark]
    print_table: Callable[[Report], None] | None = getattr(module, "print_table", None)
    parser = argparse.ArgumentParser(description=(module.__doc__ or "").split("\n\n")[0])
    module.options(parser)
    if hasattr(module, "TIMEOUT"):
        parser.add_argument(
            "--timeout", type=float, default=module.TIMEOUT, help="seconds allowed per part"
        )
    parser.add_argument("--concurrency", type=at_least(1), default=2, help="worker pool processes")
    parser.add_argument("--redis-url", help="a scratch Redis (flushed!) instead of a private one")
    if print_table is not None:
        parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quick", action="store_true", help="a small run to show it works")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in module.QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    check = getattr(module, "check", lambda args: None)
    problem = check(args)
    if problem:
        parser.error(problem)
    exit_on_sigterm()

    with redis_url(args.redis_url, appendonly=getattr(module, "APPENDONLY", False)) as url:
        env = environment(url, args.concurrency)
        if print_table is None:
            print_environment(env)
        report = module.run(url, args)
    report = {**report, "environment": {**env, **report.get("environment", {})}}
    if print_table is None:
        return
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_environment(report["environment"])
        print_table(report)
