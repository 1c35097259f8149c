"""Fan-out: a durable map of dispatched steps against a Celery chord and group.

One run starts a private redis-server (unless `--redis-url` is given) and
`--workers` real `celery -A benchmarks.fanout_app worker --pool prefork
--concurrency N` processes on it (broker, result backend and journal on the
one Redis), then measures on that same Redis and those same workers:

- sleep: a workflow whose one `sleep_step.map(range(--steps))` dispatches
  `--steps` steps of 10 ms of `time.sleep` (each its own Celery task, its
  outcome recorded once, the run suspended while they run and woken once),
  awaited with `RunHandle.result()`; against a chord of the same number of
  10 ms tasks with a trivial callback (`len` of the results), awaited with
  `.get()` on the callback;
- noop: the same with steps and tasks that return their argument at once;
  against a group of as many tasks, awaited with `.get()` on the group.

Each side is measured `--repeat` times, alternating, after a warm-up; the
figures are medians. Wall time: from the start (or `apply_async`) to the
result in hand. Redis commands per step: the server's
`total_commands_processed` over the measured side, divided by the number of
steps (everything: broker, result backend, journal, the commands Lua
scripts run inside Redis, and the workers' idle polling while it runs).
Journal round trips per dispatched step: counted in the workers' pool
processes while their tasks run (see `fanout_app`): the run's claim, its
dispatch, its suspension, its wake-up and what it records, and each step's
start and outcome, divided by the number of steps.

    python benchmarks/fanout.py [--steps 200] [--repeat 3] [--workers 2]
        [--concurrency 2] [--timeout 120] [--redis-url URL] [--json] [--quick]

Goal (issue 11): the durable map within 1.2x of the chord's wall time, and
at most 3 journal round trips per dispatched step including its recording.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/fanout.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from celery import chord, group

from benchmarks import _harness as bench
from benchmarks import fanout_app
from celery_durable import start

WARMUP_STEPS = 20

Side = Callable[[int, float], Any]  # (steps, timeout) -> result


def chord_side(steps: int, timeout: float) -> Any:
    header = group(fanout_app.sleep_task.s(i) for i in range(steps))
    return chord(header, fanout_app.collect.s()).apply_async().get(timeout=timeout)


def group_side(steps: int, timeout: float) -> Any:
    result = group(fanout_app.noop_task.s(i) for i in range(steps)).apply_async()
    # `interval` bounds each wait for the next result message (0.5 s by default).
    return len(result.get(timeout=timeout, interval=0.01))


def durable_sleep_side(steps: int, timeout: float) -> Any:
    return start(fanout_app.sleep_map, steps).result(timeout=timeout)


def durable_noop_side(steps: int, timeout: float) -> Any:
    return start(fanout_app.noop_map, steps).result(timeout=timeout)


def settle(client: redis.Redis, deadline: bench.Deadline) -> None:
    """Wait until the workers' counted round trips stop growing (the tail of the run's
    task, which ends after the result is published, belongs to this side)."""
    last = None
    while True:
        now = client.hgetall(fanout_app.ROUNDTRIPS_KEY)
        if now == last:
            return
        last = now
        deadline.remaining()
        time.sleep(0.1)


def measure(
    client: redis.Redis, side: Side, steps: int, deadline: bench.Deadline
) -> dict[str, float]:
    """One run of `side`: wall seconds, server commands and journal round trips per step."""
    client.delete(fanout_app.ROUNDTRIPS_KEY)
    before = int(client.info("stats")["total_commands_processed"])
    began = time.perf_counter()
    result = side(steps, deadline.remaining())
    seconds = time.perf_counter() - began
    settle(client, deadline)
    after = int(client.info("stats")["total_commands_processed"])
    if result != steps:
        raise RuntimeError(f"{side.__name__} returned {result!r}, not {steps}")
    counted = {k.decode(): int(v) for k, v in client.hgetall(fanout_app.ROUNDTRIPS_KEY).items()}
    # Take out the INFO before (counted once it ran) and the counting's own HINCRBYs.
    commands = after - before - 1 - counted.get("flushes", 0)
    return {
        "seconds": seconds,
        "commands_per_step": commands / steps,
        "journal_roundtrips_per_step": counted.get("trips", 0) / steps,
    }


def compare(
    client: redis.Redis,
    name: str,
    plain: Side,
    durable: Side,
    args: argparse.Namespace,
) -> bench.Report:
    deadline = bench.Deadline(args.timeout, f"the {name} part")
    bench.log(f"{name}: warm-up")
    measure(client, plain, WARMUP_STEPS, deadline)
    measure(client, durable, WARMUP_STEPS, deadline)
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "durable": []}
    for index in range(args.repeat):
        bench.log(f"{name}: {args.steps} steps, round {index + 1} of {args.repeat}")
        order = [("plain", plain), ("durable", durable)]
        for label, side in order if index % 2 == 0 else reversed(order):
            runs[label].append(measure(client, side, args.steps, deadline))
    medians = {
        label: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for label, results in runs.items()
    }
    return {
        **medians,
        "durable_over_plain": bench.ratios(
            medians["durable"], medians["plain"], ["seconds", "commands_per_step"]
        ),
    }


def run(url: str, args: argparse.Namespace) -> bench.Report:
    fanout_app.use_redis(url)
    workers = bench.celery_workers(
        "benchmarks.fanout_app",
        url,
        url_env=fanout_app.REDIS_URL_ENV,
        count=args.workers,
        concurrency=args.concurrency,
        env={fanout_app.COUNT_ENV: "1"},
        durable=True,
    )
    with redis.Redis.from_url(url) as client, workers:
        sleep = compare(client, "sleep", chord_side, durable_sleep_side, args)
        noop = compare(client, "noop", group_side, durable_noop_side, args)
    return {
        "steps": args.steps,
        "repeat": args.repeat,
        "workers": args.workers,
        "sleep_seconds": fanout_app.SLEEP,
        "sleep": sleep,
        "noop": noop,
    }


def print_table(report: bench.Report) -> None:
    print(
        f"{report['steps']} steps over {report['workers']} workers, median of "
        f"{report['repeat']} rounds\n"
    )
    print(f"{'':<28}{'wall (s)':>10}{'Redis cmds/step':>17}{'journal RT/step':>17}")
    rows = [
        ("chord, 10 ms tasks", report["sleep"]["plain"]),
        ("durable map, 10 ms steps", report["sleep"]["durable"]),
        ("group, no-op tasks", report["noop"]["plain"]),
        ("durable map, no-op steps", report["noop"]["durable"]),
    ]
    for label, figures in rows:
        trips = figures["journal_roundtrips_per_step"]
        print(
            f"{label:<28}{figures['seconds']:>10.3f}{figures['commands_per_step']:>17.1f}"
            f"{(f'{trips:.2f}' if trips else '-'):>17}"
        )
    for name, against in (("sleep", "chord"), ("noop", "group")):
        ratios = report[name]["durable_over_plain"]
        print(
            f"durable map / {against}: wall {bench.times(ratios['seconds'])}, "
            f"Redis commands {bench.times(ratios['commands_per_step'])}"
        )


TIMEOUT = 180.0  # seconds allowed per part (--timeout)
QUICK = {"steps": 40, "repeat": 1}


def options(parser: argparse.ArgumentParser) -> None:
    one = bench.at_least(1)
    parser.add_argument("--steps", type=one, default=200, help="steps (tasks) per map (chord)")
    parser.add_argument("--repeat", type=one, default=3, help="rounds of each side")
    parser.add_argument("--workers", type=one, default=2, help="worker processes")


if __name__ == "__main__":
    bench.main(__name__)
