"""Schedules without Beat: 1,000 one-second schedules on two workers, against Celery Beat.

One run starts a private redis-server (unless `--redis-url` is given) and
two real `celery -A benchmarks.schedule_app worker --pool prefork` workers
(`--concurrency 2` each) on it, then, on that same Redis and those workers:

- celery_durable: `--schedules` schedules `every="1s"` of a workflow that
  does nothing, fired by both workers' timer pollers (no other process),
  twice: all ticking together on each whole second (a burst a second), then
  spread evenly over the second (`start_at` offsets), the shape Beat's
  entries take by themselves. After `--warmup` seconds, every
  tick due in the next `--seconds` seconds is measured from the journal:
  fire lateness = the run's `workflow.started` time minus its tick (the run
  recorded and its task sent), start lateness = its first
  `workflow.executing` minus its tick (its body began on a worker), and how
  many ticks were missed (`catch_up="latest"` drops ticks that a saturated
  poller reaches only after the next one is due).
- Celery Beat: one `celery beat` process driving as many periodic tasks of
  one second (`schedule: 1.0`), with the same workers executing them.
  Lateness = the task body's start minus the moment Beat's own `is_due`
  made it due (its previous run plus one second); see `schedule_app`.

Figures: runs (tasks) started per second over the window, and lateness
p50/p95, both sides in the same run. What differs by design, and why the
ratio is not all there is to say:

- Beat's interval schedule drifts: each entry's next run is one second after
  its *previous send*, so a late send delays every later one and Beat sends
  fewer than N per second without ever counting a tick as missed. A durable
  schedule's ticks are fixed on the clock (whole seconds); a tick reached
  late is late, and one overtaken by the next is missed (counted).
- A durable tick does more: it records a run (a fenced journal write with an
  idempotency key, so two workers cannot both start it) and then executes a
  workflow (claim, completion: three journal writes); a Beat tick sends one
  plain message from a single process that nothing protects against a
  second copy of itself.
- Beat is a third process on a machine whose two workers already share the
  cores with it; the durable side has no extra process.

    python benchmarks/schedules.py [--schedules 1000] [--seconds 20] [--warmup 5]
        [--concurrency 2] [--redis-url redis://host:6379/0] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/schedules.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _harness as bench
from benchmarks import schedule_app
from celery_durable import delete_schedule, list_schedules, schedule
from celery_durable.extension import extension_for

WORKERS = 2


# -- celery_durable -------------------------------------------------------------------


def durable_side(url: str, args: argparse.Namespace, *, spread: bool) -> bench.Report:
    """Measure `--schedules` schedules: all on the whole second, or spread over it."""
    ext = extension_for(schedule_app.app)
    mode = "spread" if spread else "aligned"
    names = [f"{mode}-{i:05d}" for i in range(args.schedules)]
    bench.log(f"durable ({mode}): defining {len(names)} schedules of 1s")
    base = math.ceil(time.time()) + 1
    for i, name in enumerate(names):
        # Spread: schedule i ticks i/N of a second after the whole second (Beat's
        # entries spread so by themselves, each one second after its last send).
        offset = i / args.schedules if spread else 0.0
        schedule(schedule_app.tick, every="1s", name=name, start_at=base + offset)
    window = (base + args.warmup, base + args.warmup + args.seconds)
    bench.log(f"durable ({mode}): warm-up {args.warmup}s, then {args.seconds}s measured")
    deadline = bench.Deadline(window[1] - time.time() + args.timeout, "the durable side")
    bench.wait_for("the window to pass", lambda: time.time() > window[1] + 1, deadline, 0.2)
    missed = sum(s["missed"] for s in _all_schedules() if s["name"].startswith(mode))
    for name in names:
        delete_schedule(name)
    _drain(ext, deadline)

    bench.log(f"durable ({mode}): reading the journals")
    fire, start, runs = [], [], 0
    for run_id in ext.redis.zrange(ext.keys.runs_index(), 0, -1):
        events = ext.journal.read(run_id.decode())
        tick = events[0].data.get("scheduled_at")
        if not (events[0].data.get("schedule") or "").startswith(mode) or tick is None:
            continue
        if not window[0] <= tick.timestamp() < window[1]:
            continue
        runs += 1
        fire.append(events[0].ts - tick.timestamp())
        executing = [e for e in events if e.type == "workflow.executing"]
        if executing:
            start.append(executing[0].ts - tick.timestamp())
    return {
        "ticks_due": args.schedules * args.seconds,
        "runs": runs,
        "runs_per_s": runs / args.seconds,
        "missed_ticks_all_time": missed,
        "fire_lateness_ms": _percentiles(fire),
        "start_lateness_ms": _percentiles(start),
        "never_executed": runs - len(start),
    }


def _all_schedules() -> Iterator[dict[str, Any]]:
    after = None
    while True:
        page = list_schedules(limit=1000, after=after)
        yield from page
        if len(page) < 1000:
            return
        after = page[-1]["name"]


def _drain(ext: Any, deadline: bench.Deadline) -> None:
    """Wait until the broker queue is empty and stays so for a second."""
    quiet_since = None
    while True:
        deadline.remaining()
        if ext.redis.llen("celery") == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                return
        else:
            quiet_since = None
        time.sleep(0.1)


# -- Celery Beat ----------------------------------------------------------------------------


@contextlib.contextmanager
def celery_beat(url: str, entries: int, logs: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        schedule_app.REDIS_URL_ENV: url,
        schedule_app.BEAT_ENTRIES_ENV: str(entries),
    }
    log = open(Path(logs) / "beat.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchmarks.schedule_app",
            "beat",
            "-S",
            "benchmarks.schedule_app:StampingScheduler",
            "--loglevel",
            "warning",
        ],
        cwd=bench.ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def beat_side(url: str, args: argparse.Namespace) -> bench.Report:
    ext = extension_for(schedule_app.app)
    ext.redis.delete(schedule_app.BEAT_LATENESS_KEY)
    with tempfile.TemporaryDirectory(prefix="bench-beat-") as logs:
        began = time.time()
        with celery_beat(url, args.schedules, logs) as beat:
            bench.log(f"beat: {args.schedules} periodic tasks of 1s")
            deadline = bench.Deadline(args.warmup + args.seconds + args.timeout, "the Beat side")

            def first_sent() -> bool:
                if beat.poll() is not None:
                    raise RuntimeError(f"celery beat exited with {beat.returncode}")
                return ext.redis.llen(schedule_app.BEAT_LATENESS_KEY) > 0

            bench.wait_for("Beat's first task", first_sent, deadline, 0.05)
            began = time.time()
            window = (began + args.warmup, began + args.warmup + args.seconds)
            bench.wait_for("the window to pass", lambda: time.time() > window[1] + 1, deadline, 0.2)
        _drain(ext, deadline)
    late, runs = [], 0
    for item in ext.redis.lrange(schedule_app.BEAT_LATENESS_KEY, 0, -1):
        due, started = (float(x) for x in item.split())
        if window[0] <= due < window[1]:
            runs += 1
            late.append(started - due)
    return {
        "entries": args.schedules,
        "runs": runs,
        "runs_per_s": runs / args.seconds,
        "start_lateness_ms": _percentiles(late),
    }


# -- the benchmark --------------------------------------------------------------------------


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ms = [v * 1000 for v in values]
    return {
        "p50": bench.percentile(ms, 50),
        "p95": bench.percentile(ms, 95),
        "max": max(ms),
    }


def run(url: str, args: argparse.Namespace) -> bench.Report:
    schedule_app.use_redis(url)
    report: bench.Report = {
        "schedules": args.schedules,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "workers": WORKERS,
    }
    with bench.celery_workers(
        "benchmarks.schedule_app",
        url,
        url_env=schedule_app.REDIS_URL_ENV,
        count=WORKERS,
        concurrency=args.concurrency,
        durable=True,
    ):
        report["durable"] = durable_side(url, args, spread=False)
        report["durable_spread"] = durable_side(url, args, spread=True)
        report["beat"] = beat_side(url, args)
    b = report["beat"]
    for mode in ("durable", "durable_spread"):
        d = report[mode]
        report[f"{mode}_over_beat"] = {
            "runs_per_s": bench.ratio(d["runs_per_s"], b["runs_per_s"]),
            "p50": bench.ratio(d["start_lateness_ms"]["p50"], b["start_lateness_ms"]["p50"]),
            "p95": bench.ratio(d["start_lateness_ms"]["p95"], b["start_lateness_ms"]["p95"]),
        }
    return report


def print_table(report: bench.Report) -> None:
    b = report["beat"]
    print(
        f"{report['schedules']} schedules of 1s, {report['workers']} workers; "
        f"{report['seconds']:g}s measured after {report['warmup']:g}s of warm-up; "
        "lateness = body started - due\n"
    )
    print(f"{'':<40}{'runs/s':>9}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")

    def row(label: str, per_s: float | None, late: dict[str, Any]) -> None:
        cells = "".join(
            f"{'-' if late[k] is None else format(late[k], '.1f'):>10}"
            for k in ("p50", "p95", "max")
        )
        print(f"{label:<40}{'' if per_s is None else format(per_s, '.0f'):>9}{cells}")

    for mode, title in (("durable", "on the whole second"), ("durable_spread", "spread")):
        d, r = report[mode], report[f"{mode}_over_beat"]
        row(f"durable, {title}", d["runs_per_s"], d["start_lateness_ms"])
        row("  (recorded and sent: fire lateness)", None, d["fire_lateness_ms"])
        print(
            f"{'  durable/Beat':<40}{bench.times(r['runs_per_s']):>9}{bench.times(r['p50']):>10}"
            f"{bench.times(r['p95']):>10}"
        )
        print(
            f"  {d['runs']:,} runs for {d['ticks_due']:,.0f} ticks due in the window; "
            f"{d['missed_ticks_all_time']:,} missed in all (catch_up='latest')"
        )
    row("Celery Beat (entries spread by drift)", b["runs_per_s"], b["start_lateness_ms"])


TIMEOUT = 120.0
QUICK = {"schedules": 50, "seconds": 4.0, "warmup": 2.0}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--schedules", type=bench.at_least(1), default=1000, help="schedules (Beat entries)"
    )
    parser.add_argument("--seconds", type=bench.positive, default=20.0, help="seconds measured")
    parser.add_argument(
        "--warmup", type=bench.at_least(0, float), default=5.0, help="seconds before measuring"
    )


if __name__ == "__main__":
    bench.main(__name__)
