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
                                         [--burst-rounds 3] [--poll-interval S] [--json]
                                         [--redis-url redis://host:6379/0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/sleep_overshoot.py` from anywhere


from benchmarks import timer_app  # noqa: E402
from benchmarks._harness import (  # noqa: E402
    Deadline,
    celery_worker,
    environment,
    exit_on_sigterm,
    log,
    percentile,
    redis_url,
)
from celery_durable import start  # noqa: E402
from celery_durable.extension import extension_for  # noqa: E402

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
        log(f"note: run {run_id} has {len(executing)} executions, {len(suspended)} suspensions")
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
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        max_ms=max(ms),
        mean_ms=statistics.fmean(ms),
        min_ms=min(ms),
    )


def overshoots(side: Side, runs: int, seconds: float, spread: float, timeout: float) -> list[float]:
    """Start `runs` runs, the i-th at i * spread / runs seconds; each one's overshoot."""
    deadline = Deadline(timeout, "a batch of sleeps")
    began = time.monotonic()
    waiters = []
    for i in range(runs):
        if spread > 0:
            delay = began + i * spread / runs - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        waiters.append(side(i, seconds))
    return [wait(deadline.remaining()) for wait in waiters]


def benchmark(url: str, args: argparse.Namespace) -> dict[str, Any]:
    timer_app.use_redis(url)
    env = {}
    if args.poll_interval:
        env[timer_app.POLL_INTERVAL_ENV] = str(args.poll_interval)
    poll_interval = args.poll_interval or extension_for(timer_app.app).settings.timer_poll_interval
    report: dict[str, Any] = {
        "environment": run_environment(url, args.concurrency, poll_interval),
        "runs": args.runs,
        "sleep_s": args.seconds,
        "spread_s": args.spread,
        "burst_rounds": args.burst_rounds,
    }
    with celery_worker(
        "benchmarks.timer_app",
        url,
        url_env=timer_app.REDIS_URL_ENV,
        ping=timer_app.ping,
        concurrency=args.concurrency,
        extra_env=env,
    ):
        log("warm-up")
        for side in (plain_side, durable_side):
            overshoots(side, WARMUP_RUNS, WARMUP_SECONDS, 0.0, args.timeout)
        for mode, spread, rounds in (
            ("spread", args.spread, 1),
            ("burst", 0.0, args.burst_rounds),
        ):
            values: dict[str, list[float]] = {"plain": [], "durable": []}
            for round_ in range(rounds):
                for name, side in (("plain", plain_side), ("durable", durable_side)):
                    log(f"{mode} {round_ + 1}/{rounds}: {name}, {args.runs} sleeps")
                    values[name] += overshoots(side, args.runs, args.seconds, spread, args.timeout)
            report[mode] = {name: asdict(summarize(v)) for name, v in values.items()}
            plain, durable = report[mode]["plain"], report[mode]["durable"]
            report[mode]["durable_over_plain"] = {
                k: durable[k] / plain[k] if plain[k] > 0 else None
                for k in ("p50_ms", "p95_ms", "max_ms")
            }
    return report


def run_environment(url: str, concurrency: int, poll_interval: float) -> dict[str, Any]:
    return {**environment(url, concurrency), "timer_poll_interval_s": poll_interval}


# -- reporting ---------------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


def print_table(report: dict[str, Any]) -> None:
    env = report["environment"]
    print(
        f"Redis {env['redis']}, Celery {env['celery']}; worker --pool {env['pool']} "
        f"--concurrency {env['concurrency']}; durable_timer_poll_interval "
        f"{env['timer_poll_interval_s']:g}s"
    )
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
        print(
            f"{'durable/plain':<26}{_ratio(ratios['p50_ms']):>9}{_ratio(ratios['p95_ms']):>9}"
            f"{_ratio(ratios['max_ms']):>9}\n"
        )
    interval_ms = env["timer_poll_interval_s"] * 1000
    print(
        f"(polling alone, due times uniform over a {interval_ms:.0f} ms poll interval, "
        f"would give p50 ~{interval_ms / 2:.0f} ms, p95 ~{interval_ms * 0.95:.0f} ms)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=50, help="sleeps per side and mode")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each sleep")
    parser.add_argument("--spread", type=float, default=1.0, help="seconds to spread starts over")
    parser.add_argument(
        "--burst-rounds",
        type=int,
        default=3,
        help="bursts per side, pooled (one burst is one draw of the poller's phase)",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument(
        "--poll-interval",
        type=float,
        help="set durable_timer_poll_interval on the worker (default: celery_durable's, 0.2s)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per batch")
    parser.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if min(args.runs, args.concurrency, args.burst_rounds) < 1 or args.seconds <= 0:
        parser.error("--runs, --burst-rounds, --concurrency and --seconds must be positive")
    if args.spread < 0:
        parser.error("--spread must not be negative")

    with redis_url(args.redis_url) as url:
        report = benchmark(url, args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
