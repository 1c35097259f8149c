"""Per-step CPU time and Redis commands per run: what a regression of the hot path shows.

In this process, against a private redis-server (no broker traffic but
`start()`'s publish, no worker): `--runs` runs of the 10-step workflow of
`benchmarks/throughput.py` (`bench_app.ten_steps`), each started with
`start()` and executed here as a worker's task executes it
(`worker.run_task.execute_run`). Prints:

- CPU time of this process per step and per run while executing (the
  worker's side of a step, Redis' own time excluded), and per `start()`;
- round trips to the journal's Redis per run and per `start()`, with their
  commands (counted on the client, `celery_durable.contrib.round_trips`);
- commands Redis executed per run, those run inside Lua scripts included
  (`INFO commandstats` deltas), and per `start()` (its broker publish
  included);
- for reference, CPU time per call of one plain Celery task body run in
  this process the way a worker runs it (`bench_app.noop.apply()`, its
  result not stored): the floor a step's bookkeeping adds to.

With `--cprofile N`, the top N functions of a profiled pass go to stderr
(cProfile inflates small calls: proportions, not costs).

    python benchmarks/profile_step.py [--runs 500] [--cprofile 25] [--redis-url URL] [--quick]

The figures move much less with the machine's load than timings of a real
worker do, but CPU time still does: compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/profile_step.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from benchmarks import _harness as bench
from benchmarks import bench_app
from celery_durable import start
from celery_durable.contrib.round_trips import RoundTrips
from celery_durable.extension import extension_for
from celery_durable.worker.run_task import execute_run

WARMUP = 20
WORKER = "profile@bench"


def _commandstats(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def _executed(client: redis.Redis, before: Counter[str]) -> Counter[str]:
    after = _commandstats(client)
    after.subtract(before)
    after["info"] -= 1  # our own INFO
    return +after


def run(url: str, args: argparse.Namespace) -> bench.Report:
    bench_app.use_redis(url)
    ext = extension_for(bench_app.app)
    admin = redis.Redis.from_url(url)
    try:
        for x in range(WARMUP):
            handle = start(bench_app.ten_steps, x)
            execute_run(ext, handle.id, worker=WORKER)
        bench_app.noop.apply(args=(0,))

        # start(): round trips and commands, then CPU.
        before = _commandstats(admin)
        with RoundTrips(ext.redis) as trips:
            handle = start(bench_app.ten_steps, 0)
        start_commands = _executed(admin, before)
        start_trips = trips.commands
        execute_run(ext, handle.id, worker=WORKER)

        began = time.process_time()
        ids = [start(bench_app.ten_steps, x).id for x in range(args.runs)]
        start_cpu = (time.process_time() - began) / args.runs

        # One run executed: round trips and commands.
        before = _commandstats(admin)
        with RoundTrips(ext.redis) as trips:
            execute_run(ext, ids[0], worker=WORKER)
        run_commands = _executed(admin, before)
        run_trips = trips.commands

        # The rest: CPU and wall time.
        began_cpu, began_wall = time.process_time(), time.perf_counter()
        for run_id in ids[1:]:
            execute_run(ext, run_id, worker=WORKER)
        executed = len(ids) - 1
        run_cpu = (time.process_time() - began_cpu) / executed
        run_wall = (time.perf_counter() - began_wall) / executed

        began = time.process_time()
        for x in range(args.runs):
            bench_app.noop.apply(args=(x,))
        plain_cpu = (time.process_time() - began) / args.runs

        if args.cprofile:
            ids = [start(bench_app.ten_steps, x).id for x in range(args.runs)]
            profiler = cProfile.Profile()
            profiler.enable()
            for run_id in ids:
                execute_run(ext, run_id, worker=WORKER)
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(
                args.cprofile
            )
    finally:
        admin.close()
    steps = bench_app.STEPS
    report: bench.Report = {
        "runs": args.runs,
        "steps_per_run": steps,
        "start": {
            "cpu_us": start_cpu * 1e6,
            "round_trips": len(start_trips),
            "trips": start_trips,
            "commands_executed": sum(start_commands.values()),
            "commands": dict(start_commands),
        },
        "run": {
            "cpu_us": run_cpu * 1e6,
            "cpu_per_step_us": run_cpu * 1e6 / steps,
            "wall_ms": run_wall * 1e3,
            "round_trips": len(run_trips),
            "trips": run_trips,
            "commands_sent": sum(len(trip) for trip in run_trips),
            "commands_executed": sum(run_commands.values()),
            "commands": dict(run_commands),
        },
        "plain_task_cpu_us": plain_cpu * 1e6,
        "step_over_plain_task_cpu": run_cpu / steps / plain_cpu,
    }
    return report


def print_table(report: bench.Report) -> None:
    start_, run_ = report["start"], report["run"]
    steps = report["steps_per_run"]
    print(f"{report['runs']} runs of {steps} inline steps, executed in this process\n")
    print(f"start(): {start_['cpu_us']:.0f} us CPU, {start_['round_trips']} round trip(s) ")
    print(f"  {start_['trips']}")
    print(f"  Redis executed {start_['commands_executed']} commands (publish included):")
    print(f"  {_commands(start_['commands'])}")
    print(
        f"a run: {run_['cpu_us']:.0f} us CPU ({run_['cpu_per_step_us']:.0f} us per step), "
        f"{run_['wall_ms']:.2f} ms wall"
    )
    print(
        f"  {run_['round_trips']} round trips, {run_['commands_sent']} commands sent; "
        f"Redis executed {run_['commands_executed']} (inside scripts included):"
    )
    print(f"  {_commands(run_['commands'])}")
    print(f"  round trips: {run_['trips']}")
    print(
        f"plain Celery task body (apply()): {report['plain_task_cpu_us']:.0f} us CPU; "
        f"a step costs {bench.times(report['step_over_plain_task_cpu'])} that"
    )


def _commands(commands: dict[str, Any]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(commands.items()))


QUICK = {"runs": 50}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=500, help="runs started and executed")
    parser.add_argument(
        "--cprofile", type=int, default=0, metavar="N", help="print the top N functions"
    )


def check(args: argparse.Namespace) -> str | None:
    return "--runs must be at least 2" if args.runs < 2 else None


if __name__ == "__main__":
    bench.main(__name__)
