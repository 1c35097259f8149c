"""Where a failing plain task's time goes with celery_durable's rules loaded.

A companion of `benchmarks/rules_overhead.py` (same app, same rules, see
benchmarks/rules_app.py). Two parts:

1. In this process, against a private redis-server, with the 10 rules of
   configuration C loaded: the cost per call of each piece of what the
   extension does for one failed task (`failure_data`, encoding, the XADD
   to the global stream, the plugin hook, `RuleEngine.on_emit`, all of
   `emit`) and of one heartbeat snapshot write (worker/heartbeat.py), in
   microseconds (median of `--repeat` timings of `--calls` calls each).
2. A real prefork worker per configuration (A plain, C rules by default)
   whose pool processes run under cProfile while `--tasks` failing tasks
   drain; prints, per task, the profiled time under Celery's tracer and
   under each celery_durable entry point, and the top functions of the
   difference.

3. An ablation, without profiler: failing-task throughput of A (plain), C
   (10 rules) and C without the XADD of `emit` (`rules_noxadd`, the stream
   write dropped by a stub client), interleaved for `--ablation-rounds`
   rounds, a fresh worker each; medians and ratios to A.

cProfile inflates small Python calls, so part 2 gives proportions, part 1
the costs, part 3 the effect of the one round trip on throughput.

    python benchmarks/rules_profile.py [--tasks 2000] [--calls 2000] [--repeat 5]
        [--configs plain,rules] [--ablation-rounds 3] [--ablation-tasks 3000]
        [--skip-micro] [--skip-workers] [--skip-ablation] [--concurrency 2]
        [--redis-url URL] [--quick]
"""

from __future__ import annotations

import argparse
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/rules_profile.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# This process loads the rules itself (part 1); workers get their own config.
os.environ["CELERY_DURABLE_BENCH_RULES_CONFIG"] = "rules"

import redis
from billiard.einfo import ExceptionInfo

from benchmarks import _harness as bench
from benchmarks import rules_app
from benchmarks.rules_overhead import run_batch
from celery_durable.activity import TASK_FAILED, Activity
from celery_durable.contrib.workers import WorkerProcess
from celery_durable.extension import installed
from celery_durable.worker import holdings
from celery_durable.worker.heartbeat import Heartbeat
from celery_durable.worker.rules import activate_rules
from celery_durable.worker.task_events import failure_data

# -- part 1: costs per call ----------------------------------------------------------------


def per_call_us(fn: Callable[[], Any], calls: int, repeat: int) -> float:
    fn()
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        for _ in range(calls):
            fn()
        timings.append((time.perf_counter() - began) / calls * 1e6)
    return statistics.median(timings)


class FakeRequest:
    """Just what `holdings.record_of` reads of a worker's Request."""

    def __init__(self, i: int):
        self.id = f"task-{i:04d}-0000-0000-0000-000000000000"
        self.name = "rules_bench.ok"
        self.body = b'[[%d], {}, {"callbacks": null, "errbacks": null}]' % i
        self.content_type = "application/json"
        self.content_encoding = "utf-8"
        self.request_dict = {
            "id": self.id,
            "task": self.name,
            "argsrepr": f"({i},)",
            "kwargsrepr": "{}",
            "origin": "gen1@localhost",
            "retries": 0,
            "timelimit": [None, None],
            "root_id": self.id,
            "parent_id": None,
            "hostname": "rules_bench@localhost",
            "delivery_info": {"exchange": "", "routing_key": rules_app.BENCH_QUEUE},
        }
        self.delivery_info = self.request_dict["delivery_info"]
        self.time_start = None


def micro(url: str, calls: int, repeat: int) -> None:
    rules_app.use_redis(url)
    app, task = rules_app.app, rules_app.fail
    ext = installed(app)
    assert ext is not None
    delivery = {"exchange": "", "routing_key": rules_app.BENCH_QUEUE, "priority": 0}
    task.push_request(
        id="0f8fad5b-d9cb-469f-a165-70867728950e",
        args=(7,),
        kwargs={},
        delivery_info=delivery,
        hostname="rules_bench@localhost",
        task=task.name,
    )
    try:
        try:
            task.run(7)
        except ValueError as exc:
            error: BaseException = exc
            einfo = ExceptionInfo()
        request_id = task.request.id

        def data() -> dict[str, Any]:
            return failure_data(ext, task, request_id, error, (7,), {}, einfo)[0]

        def emit() -> None:
            event_data, complete = failure_data(ext, task, request_id, error, (7,), {}, einfo)
            ext.emit(TASK_FAILED, event_data, complete=complete)

        event = Activity(TASK_FAILED, data())
        encoded = event.encode()
        stream = ext.keys.events()
        maxlen = ext.settings.events_maxlen

        def xadd() -> None:
            ext.redis.xadd(stream, {"e": encoded}, maxlen=maxlen, approximate=True)

        rows: list[tuple[str, Callable[[], Any]]] = [
            ("failure_data() (builds the event)", data),
            ("Activity.encode() (msgpack)", event.encode),
            ("XADD to the global stream (1 round trip)", xadd),
            ("redis PING (1 round trip, for scale)", ext.redis.ping),
            ("failure_data + emit, rules not evaluated", emit),  # they do not listen yet
        ]
        print(f"\nper call, median of {repeat} x {calls} calls, in this process:")
        print(f"  event size encoded: {len(encoded)} bytes")
        for name, fn in rows:
            print(f"  {name:<52}{per_call_us(fn, calls, repeat):>9.1f} us")
        engine = activate_rules(ext)  # as a worker does: the rules listen from now on
        rows = [
            ("pm.hook.durable_event", lambda: engine.pm.hook.durable_event(event=event)),
            ("RuleEngine.on_emit() (10 rules, none match)", lambda: engine.on_emit(event)),
            ("failure_data + emit, rules evaluated (B/C path)", emit),
        ]
        for name, fn in rows:
            print(f"  {name:<52}{per_call_us(fn, calls, repeat):>9.1f} us")
    finally:
        task.pop_request()

    # The heartbeat's snapshot write: the worker does it ~50 ms after each burst of
    # received messages (task_received -> touch), with every held request.
    heartbeat = Heartbeat(ext, "rules_bench@localhost")
    saved = holdings.held_requests
    for held in (8, 64):
        requests = [FakeRequest(i) for i in range(held)]
        holdings.held_requests = lambda requests=requests: requests  # type: ignore[misc]
        try:
            cost = per_call_us(heartbeat.beat, max(1, calls // 10), repeat)
        finally:
            holdings.held_requests = saved
        print(f"  {f'Heartbeat.beat() with {held} held requests':<52}{cost:>9.1f} us")
    redis.Redis.from_url(url).flushdb()


# -- part 2: the pool processes under cProfile ---------------------------------------------

ENTRY_POINTS = {
    "celery trace_task (whole task)": ("celery/app/trace.py", "trace_task"),
    "celery handle_failure": ("celery/app/trace.py", "handle_failure"),
    "celery _log_error (the ERROR log line)": ("celery/app/trace.py", "_log_error"),
    "durable on_task_failure (task.failed report)": (
        "celery_durable/worker/task_events.py",
        "on_task_failure",
    ),
    "  failure_data": ("celery_durable/worker/task_events.py", "failure_data"),
    "  DurableExtension.emit": ("celery_durable/extension.py", "emit"),
    "    RuleEngine.on_emit": ("celery_durable/rules/engine.py", "on_emit"),
    "durable bootstep _on_failure": ("celery_durable/worker/bootstep.py", "_on_failure"),
    "redis-py execute_command (all)": ("redis/client.py", "execute_command"),
}


def cumulative(stats: pstats.Stats, path: str, name: str) -> float:
    total = 0.0
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and file.endswith(path):
            total += ct
    return total


def rules_worker(
    url: str, config: str, name: str, concurrency: int, env: dict[str, str] | None = None
) -> AbstractContextManager[WorkerProcess]:
    """A worker of `benchmarks.rules_app` in configuration `config`, on the "celery" queue."""
    return bench.celery_worker(
        "benchmarks.rules_app",
        url,
        url_env=rules_app.REDIS_URL_ENV,
        concurrency=concurrency,
        name=f"{name}@localhost",
        extra_args=["-Q", "celery"],
        env={rules_app.CONFIG_ENV: config, **(env or {})},
    )


def profile_worker(
    url: str, config: str, tasks: int, timeout: float, concurrency: int
) -> pstats.Stats:
    client = redis.Redis.from_url(url)
    with tempfile.TemporaryDirectory(prefix="rules-profile-") as directory:
        profiled = {rules_app.PROFILE_ENV: directory}
        name = f"rules_profile_{config}"
        with rules_worker(url, config, name, concurrency, profiled) as worker:
            deadline = bench.Deadline(timeout, f"profiling {config}")
            run_batch(client, rules_app.fail, tasks, worker, deadline)
        files = sorted(Path(directory).glob("pool-*.prof"))
        if not files:
            raise RuntimeError("the pool processes wrote no profile")
        stats = pstats.Stats(str(files[0]))
        for extra in files[1:]:
            stats.add(str(extra))
    client.flushdb()
    client.close()
    return stats


def report_profiles(profiles: dict[str, pstats.Stats], tasks: int) -> None:
    configs = list(profiles)
    print(f"\npool processes under cProfile, {tasks} failing tasks; us per task (inflated)")
    print(f"  {'':<44}" + "".join(f"{c:>10}" for c in configs))
    for label, (path, name) in ENTRY_POINTS.items():
        values = [cumulative(profiles[c], path, name) / tasks * 1e6 for c in configs]
        print(f"  {label:<44}" + "".join(f"{v:>10.1f}" for v in values))
    if len(configs) >= 2:
        base, other = configs[0], configs[-1]
        own: dict[tuple[str, int, str], list[float]] = {}
        for index, config in enumerate((base, other)):
            for key, (_cc, _nc, tt, _ct, _callers) in profiles[config].stats.items():  # type: ignore[attr-defined]
                own.setdefault(key, [0.0, 0.0])[index] += tt
        grown = sorted(own.items(), key=lambda item: item[1][1] - item[1][0], reverse=True)
        print(f"\n  own time that grew most from {base} to {other} (us per task):")
        for (file, line, func), (a, b) in grown[:15]:
            where = "/".join(Path(file).parts[-2:]) if file != "~" else "<builtin>"
            print(f"    {(b - a) / tasks * 1e6:>8.1f}  {func} ({where}:{line})")


# -- part 3: ablation ------------------------------------------------------------------

ABLATION = (("A", "plain"), ("C", "rules"), ("C-noXADD", "rules_noxadd"))


def ablation(url: str, rounds: int, tasks: int, timeout: float, concurrency: int) -> None:
    client = redis.Redis.from_url(url)
    rates: dict[str, list[float]] = {label: [] for label, _ in ABLATION}
    cpu: dict[str, list[float]] = {label: [] for label, _ in ABLATION}
    for round_no in range(1, rounds + 1):
        for label, config in ABLATION:
            name = f"rules_ablation_{config}{round_no}"
            with rules_worker(url, config, name, concurrency) as worker:
                deadline = bench.Deadline(timeout, f"ablation {label} round {round_no}")
                run_batch(client, rules_app.fail, 300, worker, deadline)
                batch = run_batch(client, rules_app.fail, tasks, worker, deadline)
            client.flushdb()
            rates[label].append(batch.tasks_per_s)
            cpu[label].append(batch.worker_cpu_ms + batch.redis_cpu_ms)
            bench.log(f"ablation round {round_no} {label}: {batch.tasks_per_s:.0f} failing tasks/s")
    client.close()
    base_rate, base_cpu = statistics.median(rates["A"]), statistics.median(cpu["A"])
    print(f"\nablation: {tasks} failing tasks, {rounds} rounds interleaved, medians")
    print(f"  {'':<10}{'tasks/s':>9}{'/A':>7}  {'per round':<22}{'CPU ms':>8}{'/A':>7}")
    for label, _ in ABLATION:
        rate, ms = statistics.median(rates[label]), statistics.median(cpu[label])
        each = " ".join(f"{r:.0f}" for r in rates[label])
        print(
            f"  {label:<10}{rate:>9.0f}{rate / base_rate:>7.3f}  {each:<22}"
            f"{ms:>8.3f}{ms / base_cpu:>7.3f}"
        )


def run(url: str, args: argparse.Namespace) -> bench.Report:
    if not args.skip_micro:
        micro(url, args.calls, args.repeat)
    rules_app.use_redis(url)
    if not args.skip_workers:
        profiles = {}
        for config in args.configs.split(","):
            bench.log(f"profiling a {config} worker")
            profiles[config] = profile_worker(
                url, config, args.tasks, args.timeout, args.concurrency
            )
        report_profiles(profiles, args.tasks)
    if not args.skip_ablation:
        ablation(url, args.ablation_rounds, args.ablation_tasks, args.timeout, args.concurrency)
    return {}


TIMEOUT = 120.0  # seconds allowed per part (--timeout)
QUICK = {"tasks": 200, "calls": 200, "repeat": 2, "ablation_rounds": 1, "ablation_tasks": 300}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=2000, help="failing tasks per worker")
    parser.add_argument("--calls", type=int, default=2000, help="calls per micro timing")
    parser.add_argument("--repeat", type=int, default=5, help="micro timings per piece")
    parser.add_argument("--configs", default="plain,rules", help="worker configurations")
    parser.add_argument("--ablation-rounds", type=int, default=3)
    parser.add_argument("--ablation-tasks", type=int, default=3000)
    parser.add_argument("--skip-micro", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-ablation", action="store_true")


if __name__ == "__main__":
    bench.main(__name__)
