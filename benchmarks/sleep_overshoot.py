"""How late a durable `sleep()` resumes, against a plain Celery `countdown`.

One run starts a private redis-server (unless `--redis-url` is given) and a
real `celery worker --pool prefork --concurrency 2` of `benchmarks.timer_app`
on it, with celery_durable's default timer poll interval (0.2 s), then
measures on that same Redis and worker:

- celery_durable: `--runs` runs of a workflow that does `sleep(2s)` then one
  step. Overshoot of a run = `ts` of its second `workflow.executing` event
  (the resume) minus `data["until"]` of its `workflow.suspended` event (the
  due time). It covers the poller's wait, the claim, the dispatch through the
  broker, the pool and the replay up to the resume's first journal write.
- plain Celery: the same number of `countdown=2` tasks. Overshoot of a task =
  the time its body started minus its eta.

Each side is measured in two modes: with the starts spread evenly over
`--spread` seconds (so due times do not coincide), and as bursts (all started
at once, so all come due together and queue behind the pool). One burst is a
single draw of where the poller's cycle falls, so `--burst-rounds` bursts are
pooled. A few short sleeps of each side warm the worker up first.

    python benchmarks/sleep_overshoot.py [--runs 50] [--seconds 2] [--spread 1]
        [--burst-rounds 3] [--poll-interval S] [--timeout 60] [--concurrency 2]
        [--redis-url redis://host:6379/0] [--json] [--quick]
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

if __package__ in (None, ""):  # `python benchmarks/sleep_overshoot.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _harness as bench
from benchmarks import timer_app
from celery_durable import start
from celery_durable.extension import extension_for

WARMUP_RUNS = 4
WARMUP_SECONDS = 0.3

# Starts run i (at the right moment) and returns a function giving its overshoot in seconds.
Side = Callable[[int, float], Callable[[float], float]]


# -- the two sides -------------------------------------------------------------------


def plain_side(i: int, seconds: float) -> Callable[[float], float]:
    result = timer_app.delayed.apply_async((i,), countdown=seconds)

    def overshoot(timeout: float) -> float:
        answer = result.get(timeout=timeout)
        if answer["i"] != i or answer["eta"] is None:
            raise RuntimeError(f"plain task {i} answered {answer!r}")
        return answer["started"] - answer["eta"]

    return overshoot


def durable_side(i: int, seconds: float) -> Callable[[float], float]:
    run = start(timer_app.sleeper, i, seconds)

    def overshoot(timeout: float) -> float:
        result = run.result(timeout=timeout)
        if result != i:
            raise RuntimeError(f"run {run.id} returned {result!r}, not {i}")
        return resume_overshoot(run.id, run.events())

    return overshoot


def resume_overshoot(run_id: str, events: list[dict[str, Any]]) -> float:
    """ts of the second `workflow.executing` minus `until` of the `workflow.suspended`."""
    executing = [e for e in events if e["type"] == "workflow.executing"]
    suspended = [e for e in events if e["type"] == "workflow.suspended"]
    if len(executing) < 2 or not suspended:
        kinds = [e["type"] for e in events]
        raise RuntimeError(f"run {run_id}: no suspension and resume in its history {kinds}")
    if len(suspended) != 1 or len(executing) != 2:
        # An early or duplicate wake-up (re-suspended, or fenced out) would show here.
        counts = f"{len(executing)} executions, {len(suspended)} suspensions"
        bench.log(f"note: run {run_id} has {counts}")
    return executing[1]["ts"] - suspended[0]["data"]["until"]


# -- measuring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Overshoot:
    runs: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float
    min_ms: float


def summarize(values: list[float]) -> Overshoot:
    ms = [v * 1000 for v in values]
    return Overshoot(
        runs=len(ms),
        p50_ms=bench.percentile(ms, 50),
        p95_ms=bench.percentile(ms, 95),
        max_ms=max(ms),
        mean_ms=statistics.fmean(ms),
        min_ms=min(ms),
    )


def overshoots(side: Side, runs: int, seconds: float, spread: float, timeout: float) -> list[float]:
    """Start `runs` runs, the i-th at i * spread / runs seconds; each one's overshoot."""
    deadline = bench.Deadline(timeout, "a batch of sleeps")
    began = time.monotonic()
    waiters = []
    for i in range(runs):
        if spread > 0:
            delay = began + i * spread / runs - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        waiters.append(side(i, seconds))
    return [wait(deadline.remaining()) for wait in waiters]


def run(url: str, args: argparse.Namespace) -> bench.Report:
    timer_app.use_redis(url)
    env = {}
    if args.poll_interval:
        env[timer_app.POLL_INTERVAL_ENV] = str(args.poll_interval)
    poll_interval = args.poll_interval or extension_for(timer_app.app).settings.timer_poll_interval
    report: bench.Report = {
        "environment": {"timer_poll_interval_s": poll_interval},
        "runs": args.runs,
        "sleep_s": args.seconds,
        "spread_s": args.spread,
        "burst_rounds": args.burst_rounds,
    }
    with bench.celery_worker(
        "benchmarks.timer_app",
        url,
        url_env=timer_app.REDIS_URL_ENV,
        concurrency=args.concurrency,
        env=env,
    ):
        bench.log("warm-up")
        for side in (plain_side, durable_side):
            overshoots(side, WARMUP_RUNS, WARMUP_SECONDS, 0.0, args.timeout)
        for mode, spread, rounds in (
            ("spread", args.spread, 1),
            ("burst", 0.0, args.burst_rounds),
        ):
            values: dict[str, list[float]] = {"plain": [], "durable": []}
            for round_ in range(rounds):
                for name, side in (("plain", plain_side), ("durable", durable_side)):
                    bench.log(f"{mode} {round_ + 1}/{rounds}: {name}, {args.runs} sleeps")
                    values[name] += overshoots(side, args.runs, args.seconds, spread, args.timeout)
            plain, durable = (asdict(summarize(values[name])) for name in ("plain", "durable"))
            report[mode] = {
                "plain": plain,
                "durable": durable,
                "durable_over_plain": bench.ratios(durable, plain, ("p50_ms", "p95_ms", "max_ms")),
            }
    return report


# -- reporting ---------------------------------------------------------------------------


def print_table(report: bench.Report) -> None:
    poll_interval = report["environment"]["timer_poll_interval_s"]
    print(f"durable_timer_poll_interval {poll_interval:g}s")
    print(f"{report['runs']} sleeps of {report['sleep_s']:g}s; overshoot = resumed - due, in ms\n")
    header = f"{'':<26}{'p50':>9}{'p95':>9}{'max':>9}{'mean':>9}{'min':>9}"
    for mode, title in (
        ("spread", f"started over {report['spread_s']:g}s"),
        ("burst", f"{report['burst_rounds']} bursts of {report['runs']} started at once, pooled"),
    ):
        figures = report[mode]
        print(f"{mode} ({title})")
        print(header)
        for name, label in (("plain", "plain countdown"), ("durable", "durable sleep")):
            row = figures[name]
            print(
                f"{label:<26}{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}{row['max_ms']:>9.1f}"
                f"{row['mean_ms']:>9.1f}{row['min_ms']:>9.1f}"
            )
        ratios = figures["durable_over_plain"]
        shown = "".join(f"{bench.times(ratios[k], 1):>9}" for k in ("p50_ms", "p95_ms", "max_ms"))
        print(f"{'durable/plain':<26}{shown}\n")
    interval_ms = poll_interval * 1000
    print(
        f"(polling alone, due times uniform over a {interval_ms:.0f} ms poll interval, "
        f"would give p50 ~{interval_ms / 2:.0f} ms, p95 ~{interval_ms * 0.95:.0f} ms)"
    )


TIMEOUT = 60.0  # seconds allowed per part (--timeout)
QUICK = {"runs": 10, "seconds": 0.5, "spread": 0.3, "burst_rounds": 1}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", type=bench.at_least(1), default=50, help="sleeps per side and mode"
    )
    parser.add_argument("--seconds", type=bench.positive, default=2.0, help="length of each sleep")
    parser.add_argument(
        "--spread", type=bench.at_least(0, float), default=1.0, help="seconds to spread starts over"
    )
    parser.add_argument(
        "--burst-rounds",
        type=bench.at_least(1),
        default=3,
        help="bursts per side, pooled (one burst is one draw of the poller's phase)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        help="set durable_timer_poll_interval on the worker (default: celery_durable's, 0.2s)",
    )


if __name__ == "__main__":
    bench.main(__name__)
