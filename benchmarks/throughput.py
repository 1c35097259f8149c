"""Steps per second and single-run latency: celery_durable against plain Celery.

One run starts a private redis-server (unless `--redis-url` is given) and a
real `celery -A benchmarks.bench_app worker --pool prefork --concurrency 2`
on it, then measures, on that same Redis and worker:

- plain Celery: `--runs` chains of 10 trivial tasks (`noop`, x -> x + 1),
  each task's result stored in the Redis result backend (Celery's default,
  as each durable step is recorded in the journal), completion awaited with
  `.get()` on each chain's last result;
- celery_durable: `--runs` runs of a workflow of 10 inline steps (`inc`, x ->
  x + 1), completion awaited with `RunHandle.result()`.

For each side: steps/s = 10 * runs / (seconds from the first dispatch until
every run has its result), all runs started back to back; and the median
latency of one run started alone and awaited (`--latency-runs` times, one at a
time). A few runs of each side are done first as a warm-up.

    python benchmarks/throughput.py [--runs 200] [--latency-runs 20] [--timeout 120]
        [--concurrency 2] [--redis-url redis://host:6379/0] [--json] [--quick]

Progress goes to stderr, the figures to stdout (a table, or JSON with --json).

With `--redis-url` the worker uses that Redis, whose keys are left there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/throughput.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery import chain

from benchmarks import _harness as bench
from benchmarks import bench_app
from celery_durable import start

WARMUP_BATCH = 10
WARMUP_SINGLE = 3

# A dispatch starts run number i and returns a function that waits for its result.
Waiter = Callable[[float], Any]
Dispatch = Callable[[int], Waiter]


# -- the two sides -------------------------------------------------------------------


def plain_dispatch(x: int) -> Waiter:
    tasks = [bench_app.noop.s(x), *(bench_app.noop.s() for _ in range(bench_app.STEPS - 1))]
    last = chain(*tasks).apply_async()
    return lambda timeout: last.get(timeout=timeout)


def durable_dispatch(x: int) -> Waiter:
    return start(bench_app.ten_steps, x).result


# -- measuring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SideFigures:
    seconds: float
    steps_per_s: float
    median_latency_ms: float


def _expect(result: Any, x: int) -> None:
    if result != x + bench_app.STEPS:
        raise RuntimeError(f"run of {x} returned {result!r}, not {x + bench_app.STEPS}")


def batch_seconds(dispatch: Dispatch, runs: int, deadline: bench.Deadline) -> float:
    """Start `runs` runs back to back, wait for all; seconds from first start to last result."""
    began = time.perf_counter()
    waiters = [dispatch(x) for x in range(runs)]
    for x, wait in enumerate(waiters):
        _expect(wait(deadline.remaining()), x)
    return time.perf_counter() - began


def single_latencies(dispatch: Dispatch, runs: int, deadline: bench.Deadline) -> list[float]:
    """Seconds for each of `runs` runs started alone and awaited, one after the other."""
    latencies = []
    for x in range(runs):
        began = time.perf_counter()
        _expect(dispatch(x)(deadline.remaining()), x)
        latencies.append(time.perf_counter() - began)
    return latencies


def measure(name: str, dispatch: Dispatch, args: argparse.Namespace) -> SideFigures:
    deadline = bench.Deadline(args.timeout, f"the {name} side")
    bench.log(f"{name}: warm-up")
    batch_seconds(dispatch, WARMUP_BATCH, deadline)
    single_latencies(dispatch, WARMUP_SINGLE, deadline)
    bench.log(f"{name}: {args.runs} runs back to back")
    seconds = batch_seconds(dispatch, args.runs, deadline)
    bench.log(f"{name}: {args.latency_runs} runs one at a time")
    latency = statistics.median(single_latencies(dispatch, args.latency_runs, deadline))
    return SideFigures(
        seconds=seconds,
        steps_per_s=args.runs * bench_app.STEPS / seconds,
        median_latency_ms=latency * 1000,
    )


def run(redis_url: str, args: argparse.Namespace) -> bench.Report:
    bench_app.use_redis(redis_url)
    with bench.celery_worker(
        "benchmarks.bench_app",
        redis_url,
        url_env=bench_app.REDIS_URL_ENV,
        concurrency=args.concurrency,
    ):
        plain = measure("plain", plain_dispatch, args)
        durable = measure("durable", durable_dispatch, args)
    return {
        "runs": args.runs,
        "steps_per_run": bench_app.STEPS,
        "latency_runs": args.latency_runs,
        "plain": asdict(plain),
        "durable": asdict(durable),
        "durable_over_plain": {
            "throughput": durable.steps_per_s / plain.steps_per_s,
            "latency": durable.median_latency_ms / plain.median_latency_ms,
        },
    }


def print_table(report: bench.Report) -> None:
    plain, durable = report["plain"], report["durable"]
    ratios = report["durable_over_plain"]
    print(
        f"{report['runs']} runs of {report['steps_per_run']} steps back to back; "
        f"latency: median of {report['latency_runs']} runs one at a time\n"
    )
    print(f"{'':<16}{'steps/s':>10}{'median latency (ms)':>22}")
    print(f"{'plain chain':<16}{plain['steps_per_s']:>10.0f}{plain['median_latency_ms']:>22.1f}")
    print(f"{'durable':<16}{durable['steps_per_s']:>10.0f}{durable['median_latency_ms']:>22.1f}")
    print(
        f"{'durable/plain':<16}{bench.times(ratios['throughput']):>10}"
        f"{bench.times(ratios['latency']):>22}"
    )


TIMEOUT = 120.0  # seconds allowed per part (--timeout)
QUICK = {"runs": 20, "latency_runs": 5}


def options(parser: argparse.ArgumentParser) -> None:
    one = bench.at_least(1)
    parser.add_argument("--runs", type=one, default=200, help="runs started back to back")
    parser.add_argument("--latency-runs", type=one, default=20, help="runs one at a time")


if __name__ == "__main__":
    bench.main(__name__)
