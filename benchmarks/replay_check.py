"""replay-check: how long replaying stored runs against the code takes, per 1,000 runs.

One run starts a private redis-server (unless `--redis-url` is given) and
records `--runs` unfinished runs of a workflow of `--steps` inline steps
and a sleep (`bench.replay.steps_then_sleep`): each history is what a worker
writes (`workflow.started`, `workflow.executing`, one `step.completed` per
step, `sleep.started`, `workflow.suspended`), written here through the
journal's own fenced append so that no worker is needed. It then measures,
`--repeat` times (medians):

- replay-check: `replay_check()` (what `celery durable replay-check` runs)
  over those runs: the runs index, each run's meta and history, and a dry
  replay of each against the code;
- read only: the same reads with no replay (the floor any check pays).

There is no plain-Celery counterpart to a replay: the ratio printed is
replay-check over the bare read of the same histories on the same Redis,
in the same run. No workers: `--concurrency` is unused.

    python benchmarks/replay_check.py [--runs 1000] [--steps 10] [--repeat 3]
        [--redis-url URL] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/replay_check.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery import Celery

import celery_durable
from benchmarks import _harness as bench
from celery_durable import sleep, step, workflow
from celery_durable.extension import DurableExtension, extension_for
from celery_durable.workflows import replay

NAME = "bench.replay.steps_then_sleep"


@step
def work(x: int) -> int:
    return x + 1


@workflow(name=NAME)
def steps_then_sleep(x: int, steps: int) -> int:
    for _ in range(steps):
        x = work(x)
    sleep("1d")
    return x


def record(ext: DurableExtension, runs: int, steps: int) -> None:
    """`runs` sleeping runs, each history as a worker writes it."""
    now = time.time()
    for index in range(runs):
        run_id = f"bench-{index}"
        data = {"name": NAME, "args": [0, steps], "kwargs": {}, "idempotency_key": None}
        ext.journal.create(run_id, NAME, data)
        events: list[tuple[str, dict]] = [
            ("workflow.executing", {"worker": "bench", "pid": 1, "attempt": 1})
        ]
        for position in range(steps):
            events.append(
                (
                    "step.completed",
                    {
                        "position": position,
                        "name": "work",  # a step is named by its function by default
                        "attempt": 1,
                        "result": position + 1,
                        "started_at": now,
                        "duration": 0.0001,
                    },
                )
            )
        until = now + 86400
        events.append(
            (
                "sleep.started",
                {"position": steps, "name": "sleep", "seconds": 86400.0, "until": until},
            )
        )
        events.append(("workflow.suspended", {"status": "sleeping", "until": until}))
        ext.journal.append(run_id, 1, events)


def read_only(ext: DurableExtension) -> int:
    return sum(1 for _ in replay._stored(ext, None, set(replay.UNFINISHED)))


def run(url: str, args: argparse.Namespace) -> bench.Report:
    app = Celery("bench-replay", broker=url, set_as_current=True)
    app.conf.durable_redis_url = url
    ext = celery_durable.install(app)
    try:
        record(ext, args.runs, args.steps)
        assert replay.replay_check(app=app).divergences == []  # warm-up, and a sanity check
        checks, reads = [], []
        for _ in range(args.repeat):
            began = time.perf_counter()
            report = replay.replay_check(app=app)
            checks.append(time.perf_counter() - began)
            assert report.checked == args.runs and not report.divergences
            began = time.perf_counter()
            assert read_only(extension_for(app)) == args.runs
            reads.append(time.perf_counter() - began)
    finally:
        ext.redis.close()
        app.close()
    check, read = statistics.median(checks), statistics.median(reads)
    return {
        "runs": args.runs,
        "steps": args.steps,
        "events_per_run": args.steps + 4,
        "repeat": args.repeat,
        "replay_check": {"seconds": check, "seconds_per_1000_runs": check / args.runs * 1000},
        "read_only": {"seconds": read, "seconds_per_1000_runs": read / args.runs * 1000},
        "replay_check_over_read_only": bench.ratio(check, read),
    }


def print_table(report: bench.Report) -> None:
    print(
        f"{report['runs']} sleeping runs of {report['steps']} steps "
        f"({report['events_per_run']} events each), median of {report['repeat']} rounds\n"
    )
    print(f"{'':<16}{'seconds':>10}{'s per 1,000 runs':>18}")
    for label, key in (("replay-check", "replay_check"), ("read only", "read_only")):
        figures = report[key]
        print(f"{label:<16}{figures['seconds']:>10.3f}{figures['seconds_per_1000_runs']:>18.3f}")
    print(f"replay-check / read only: {bench.times(report['replay_check_over_read_only'])}")


QUICK = {"runs": 100, "repeat": 1}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=1000, help="runs to record and check")
    parser.add_argument("--steps", type=int, default=10, help="steps per run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds")


def check(args: argparse.Namespace) -> str | None:
    if args.runs < 1 or args.steps < 0 or args.repeat < 1:
        return "--runs and --repeat must be at least 1, --steps at least 0"
    return None


if __name__ == "__main__":
    bench.main(__name__)
