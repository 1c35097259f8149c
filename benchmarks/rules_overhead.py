"""Plain task throughput with celery_durable's rules loaded, against plain Celery.

The requirement: with 10 rules loaded and none matching, plain task
throughput stays within 5% of the extension disabled (C/A >= 0.95).

One run starts a private redis-server (unless `--redis-url` is given) and,
for each configuration, a fresh `celery -A benchmarks.rules_app worker
--pool prefork --concurrency 2` on it (see benchmarks/rules_app.py):

- A `plain`: a plain Celery app, celery_durable not installed (the baseline);
- B `installed`: the same app with `celery_durable.install(app)`, no rules;
- C `rules`: installed, with 10 rules loaded (task.failed rules on other task
  names, queues and errors, a task.execution_time_exceeded rule at 3600 s,
  worker.offline, task.orphaned and workflow.failed rules), none matching.

Each worker measures two workloads of `--tasks` trivial tasks each:

- succeed: `rules_bench.ok` (i -> i + 1);
- fail: `rules_bench.fail` raises ValueError: with rules that listen to
  `task.failed` (C), every failure is reported and evaluated against them;
  with none (B), nothing is built or written for it.

The tasks of a workload are queued first on a queue the worker does not
consume yet; then the worker is told to consume it (`add_consumer`) and the
batch drains. Completions are counted identically in every configuration by
a `task_postrun` receiver (one Lua call per task, after the task_failure
receivers); tasks/s = (tasks - 1) / (time of the last completion - time of
the first), the pool's steady-state rate. A small batch of each workload
warms each worker up first. Configurations are interleaved A, B, C, A, B, C,
... for `--rounds` rounds; medians, spreads (min..max) and the ratios of the
medians B/A and C/A are printed.

Beside tasks/s it prints the CPU spent per task (worker main process, pool
processes, redis-server; from /proc and INFO) and the CPU the rest of the
machine used meanwhile ("other load", in cores): on a shared machine the rates
move by 10-25% from round to round, so read the ratios with the spreads, and
use more `--rounds` when it matters. `benchmarks/rules_profile.py` shows
where the extension's time goes.

After the failing batch the script checks that B and C did report every
failure to the global event stream and that no rule queued an action.

    python benchmarks/rules_overhead.py [--tasks 5000] [--rounds 3] [--warmup 300]
        [--timeout 120] [--concurrency 2] [--redis-url redis://host:6379/0] [--json] [--quick]

Progress goes to stderr, the figures to stdout (a table, or JSON with --json).
With `--redis-url` the keys are left there (the database is flushed between
workers: use an empty one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/rules_overhead.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.pop("CELERY_DURABLE_BENCH_RULES_CONFIG", None)  # this process only sends

import redis
from celery import Task

from benchmarks import _harness as bench
from benchmarks import rules_app
from celery_durable.keys import Keys

TARGET = 0.95
CONTROL_TIMEOUT = 5.0

# (label, rules_app configuration, description)
CONFIGS = (
    ("A", "plain", "plain Celery (not installed)"),
    ("B", "installed", "install(app), no rules"),
    ("C", "rules", "install(app), 10 rules, none match"),
)
WORKLOADS = ("succeed", "fail")
CPU_PARTS = ("main_cpu_ms_per_task", "pool_cpu_ms_per_task", "redis_cpu_ms_per_task")


@dataclass(frozen=True)
class Batch:
    tasks_per_s: float  # (n - 1) / (last completion - first completion)
    wall_tasks_per_s: float  # n / (consume order sent .. n-th completion seen)
    worker_cpu_ms: float  # CPU of the worker's processes (main + pool) per task
    main_cpu_ms: float  # of which the worker's main process (consumer, durable threads)
    redis_cpu_ms: float  # CPU of redis-server per task
    other_load: float  # CPU of everything else on the machine during the batch, in cores
    reported: int  # task.failed events written to the global stream by this batch
    actions_queued: int  # rule jobs in the action queue after the batch


# -- CPU accounting ----------------------------------------------------------------------
# Wall-clock throughput on a shared 2-core machine moves with whatever else runs.
# CPU per task (split by process) is a second view that says where a gap comes from;
# contention inflates it too, and `other_load` shows how busy the rest of the machine was.

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> tuple[float, float]:
    """user + system CPU of process group `pgid` (Linux /proc): (its leader, the others)."""
    leader = others = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ...
            ticks = int(fields[11]) + int(fields[12])  # utime, stime
            if int(entry.name) == pgid:
                leader += ticks
            else:
                others += ticks
    return leader / CLOCK_TICK, others / CLOCK_TICK


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat", "rb") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICK


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def redis_cpu_seconds(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


# -- one batch ---------------------------------------------------------------------------


def consume(hostname: str, on: bool) -> None:
    """Tell the worker to start (or stop) consuming the benchmark queue; wait for its answer."""
    control = rules_app.app.control
    command = control.add_consumer if on else control.cancel_consumer
    replies = command(
        rules_app.BENCH_QUEUE, destination=[hostname], reply=True, timeout=CONTROL_TIMEOUT
    )
    if not replies:
        raise RuntimeError(f"worker {hostname} did not answer {command.__name__}")


def run_batch(
    client: redis.Redis, task: Task, n: int, worker: bench.WorkerProcess, deadline: bench.Deadline
) -> Batch:
    pgid, hostname = worker.pid, worker.hostname  # the worker leads its own process group
    keys = Keys("durable")
    client.delete(rules_app.DONE_KEY, rules_app.FIRST_KEY, rules_app.LAST_KEY)
    events_before = client.xlen(keys.events())
    with rules_app.app.producer_or_acquire() as producer:
        for i in range(n):
            task.apply_async((i,), queue=rules_app.BENCH_QUEUE, producer=producer)
    queued = lambda: client.llen(rules_app.BENCH_QUEUE) >= n  # noqa: E731
    bench.wait_for("queueing the batch", queued, deadline)
    cpu_before = group_cpu_seconds(pgid), redis_cpu_seconds(client)
    busy_before, own_before = machine_busy_seconds(), own_cpu_seconds()
    began = time.perf_counter()
    consume(hostname, True)
    done = lambda: int(client.get(rules_app.DONE_KEY) or 0) >= n  # noqa: E731
    bench.wait_for("the batch", done, deadline)
    wall = time.perf_counter() - began
    main_after, pool_after = group_cpu_seconds(pgid)
    main_cpu = main_after - cpu_before[0][0]
    worker_cpu = main_cpu + pool_after - cpu_before[0][1]
    redis_cpu = redis_cpu_seconds(client) - cpu_before[1]
    ours = worker_cpu + redis_cpu + own_cpu_seconds() - own_before
    other_load = max(0.0, machine_busy_seconds() - busy_before - ours) / wall
    consume(hostname, False)
    count = int(client.get(rules_app.DONE_KEY) or 0)
    if count != n:
        raise RuntimeError(f"{count} completions counted for {n} tasks")
    first = float(client.get(rules_app.FIRST_KEY) or 0)
    last = float(client.get(rules_app.LAST_KEY) or 0)
    return Batch(
        tasks_per_s=(n - 1) / (last - first),
        wall_tasks_per_s=n / wall,
        worker_cpu_ms=worker_cpu * 1000 / n,
        main_cpu_ms=main_cpu * 1000 / n,
        redis_cpu_ms=redis_cpu * 1000 / n,
        other_load=other_load,
        reported=_reported(client, keys.events(), events_before),
        actions_queued=client.xlen(keys.actions()),
    )


# -- one worker --------------------------------------------------------------------------


def measure_worker(
    url: str, label: str, config: str, round_no: int, args: argparse.Namespace
) -> dict[str, Batch]:
    client = redis.Redis.from_url(url)
    try:
        with bench.celery_worker(
            "benchmarks.rules_app",
            url,
            url_env=rules_app.REDIS_URL_ENV,
            concurrency=args.concurrency,
            name=f"rules_bench_{label}{round_no}@localhost",
            extra_args=["-Q", "celery"],
            env={rules_app.CONFIG_ENV: config},
        ) as worker:
            deadline = bench.Deadline(args.timeout, f"worker {label} round {round_no}")
            tasks = {"succeed": rules_app.ok, "fail": rules_app.fail}
            for workload in WORKLOADS:
                run_batch(client, tasks[workload], args.warmup, worker, deadline)
            figures = {
                w: run_batch(client, tasks[w], args.tasks, worker, deadline) for w in WORKLOADS
            }
        verify(label, config, figures, args.tasks)
        return figures
    finally:
        client.flushdb()  # the next worker starts from an empty database
        client.close()


def _reported(client: redis.Redis, stream: str, before: int, settle: float = 2.0) -> int:
    """Events in the stream since `before`, once the background writers caught up."""
    deadline = time.monotonic() + settle
    count = client.xlen(stream) - before
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = client.xlen(stream) - before
        if now == count:
            return count
        count = now
    return count


def verify(label: str, config: str, figures: dict[str, Batch], n: int) -> None:
    """With rules listening (C) every failure was seen; no rule matched anything."""
    expected = n if config.startswith("rules") else 0
    reported = figures["fail"].reported
    if reported != expected:
        raise RuntimeError(f"{label}: {reported} task.failed events for {n} failures")
    if any(b.actions_queued for b in figures.values()):
        raise RuntimeError(f"{label}: a rule matched and queued an action")


# -- reporting ---------------------------------------------------------------------------


def _stats(values: list[float], base: list[float]) -> dict[str, Any]:
    median = statistics.median(values)
    return {
        "values": values,
        "median": median,
        "min": min(values),
        "max": max(values),
        # A figure that was 0 for A (an idle machine's "other load") has no ratio.
        "over_A": bench.ratio(median, statistics.median(base)),
        # Each round's own ratio against that round's A: how much the ratio moves.
        "round_ratios": [bench.ratio(v, a) for v, a in zip(values, base, strict=True)],
    }


def summarize(runs: dict[str, dict[str, list[Batch]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for workload in WORKLOADS:
        batches = {label: runs[label][workload] for label, _, _ in CONFIGS}

        def column(
            value: Callable[[Batch], float], batches: dict[str, list[Batch]] = batches
        ) -> dict[str, list[float]]:
            return {label: [value(b) for b in bs] for label, bs in batches.items()}

        columns = {
            "tasks_per_s": column(lambda b: b.tasks_per_s),
            "wall_tasks_per_s": column(lambda b: b.wall_tasks_per_s),
            "cpu_ms_per_task": column(lambda b: b.worker_cpu_ms + b.redis_cpu_ms),
            "main_cpu_ms_per_task": column(lambda b: b.main_cpu_ms),
            "pool_cpu_ms_per_task": column(lambda b: b.worker_cpu_ms - b.main_cpu_ms),
            "redis_cpu_ms_per_task": column(lambda b: b.redis_cpu_ms),
            "other_load_cores": column(lambda b: b.other_load),
        }
        summary[workload] = {
            label: {name: _stats(values[label], values["A"]) for name, values in columns.items()}
            for label in batches
        }
        ratio = summary[workload]["C"]["tasks_per_s"]["over_A"]
        summary[workload]["target_holds"] = ratio >= TARGET
    return summary


def print_table(report: bench.Report) -> None:
    print(
        f"{report['tasks']} tasks per batch, {report['rounds']} rounds interleaved A,B,C; "
        "median (min..max) over the rounds; /A: ratio of the medians.\n"
        "tasks/s: steady-state rate, first to last completion. CPU: ms per task, "
        "worker main process + pool processes + redis-server.\n"
        "other load: CPU cores used by the rest of the machine during the batch "
        "(high values make the rates noisy).\n"
    )
    for workload in WORKLOADS:
        figures = report["summary"][workload]
        print(f"{workload} tasks")
        print(
            f"  {'':<38}{'tasks/s':>8} {'min..max':<11}{'/A':>6}  {'per round /A':<16}"
            f"{'CPU ms':>7} {'main+pool+redis':<17}{'/A':>6}{'other load':>12}"
        )
        for label, _, description in CONFIGS:
            f = figures[label]
            rate, cpu = f["tasks_per_s"], f["cpu_ms_per_task"]
            spread = f"{rate['min']:.0f}..{rate['max']:.0f}"
            rounds = " ".join(f"{r:.2f}" for r in rate["round_ratios"])
            split = "+".join(f"{f[part]['median']:.2f}" for part in CPU_PARTS)
            load = f["other_load_cores"]
            print(
                f"  {label} {description:<36}{rate['median']:>8.0f} {spread:<11}"
                f"{rate['over_A']:>6.3f}  {rounds:<16}"
                f"{cpu['median']:>7.3f} {split:<17}{cpu['over_A']:>6.3f}"
                f"{load['median']:>6.2f} ({load['min']:.2f}..{load['max']:.2f})"
            )
        verdict = "holds" if figures["target_holds"] else "does NOT hold"
        ratio = figures["C"]["tasks_per_s"]["over_A"]
        print(f"  target C/A >= {TARGET}: {verdict} (C/A = {ratio:.3f})\n")


def run(url: str, args: argparse.Namespace) -> bench.Report:
    rules_app.use_redis(url)
    runs: dict[str, dict[str, list[Batch]]] = {
        label: {w: [] for w in WORKLOADS} for label, _, _ in CONFIGS
    }
    began = time.monotonic()
    for round_no in range(1, args.rounds + 1):
        for label, config, _ in CONFIGS:
            figures = measure_worker(url, label, config, round_no, args)
            for workload, batch in figures.items():
                runs[label][workload].append(batch)
            bench.log(
                f"round {round_no} {label} ({config}): "
                + ", ".join(f"{w} {b.tasks_per_s:.0f}/s" for w, b in figures.items())
                + f"  [{time.monotonic() - began:.0f}s]"
            )
    return {
        "tasks": args.tasks,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "target": TARGET,
        "runs": {
            label: {w: [asdict(b) for b in batches] for w, batches in by_workload.items()}
            for label, by_workload in runs.items()
        },
        "summary": summarize(runs),
    }


TIMEOUT = 120.0  # seconds allowed per part (--timeout)
QUICK = {"tasks": 300, "rounds": 1, "warmup": 50}


def options(parser: argparse.ArgumentParser) -> None:
    one = bench.at_least(1)
    parser.add_argument(
        "--tasks", type=bench.at_least(2), default=5000, help="tasks per measured batch"
    )
    parser.add_argument("--rounds", type=one, default=3, help="workers per configuration")
    parser.add_argument("--warmup", type=one, default=300, help="tasks per warm-up batch")


if __name__ == "__main__":
    bench.main(__name__)
