"""How fast a rule change reaches running workers, against restarting a plain Celery worker.

One run starts a private redis-server (unless `--redis-url` is given) and
`--workers` real `celery -A benchmarks.rule_changes_app worker --pool
prefork --concurrency N` processes with celery_durable installed, each on
its own queue. A thread sends a failing task to every worker's queue every
`--interval` seconds throughout, so every pool process evaluates failures
all the time. Then, `--changes` times:

- add: `save_rules()` stores a rule whose `bench_mark` action records its
  tag with the time of each failure it acts on (the time the pool process
  evaluated it); the delay is, per worker, the first such failure after
  the call began, minus when the call began;
- edit: the same rule saved with another tag;
- delete: `delete_rule()`; the delay is the last failure the deleted rule
  still acted on, minus when the call began (0 if none), watched for
  `--watch` seconds.

The delays include the store's own write and up to one `--interval` of
probing (and the task's trip through the broker): they are upper bounds
of what a change takes. Figures are the median and the maximum over all
workers and changes.

The baseline is what changing a plain Celery worker's behaviour takes: a
restart. The same number of plain Celery workers (celery_durable not
installed) is started and stopped warmly `--restarts` times; the figure is
the median time from the stop to the restarted worker answering a ping.
Ratios are live change / restart.

    python benchmarks/rule_changes.py [--workers 2] [--changes 5] [--interval 0.01]
        [--watch 2.5] [--restarts 3] [--concurrency 2] [--redis-url URL] [--json] [--quick]

Goal (issue 13): every worker applies an add, change or delete within 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/rule_changes.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from benchmarks import _harness as bench
from benchmarks import rule_changes_app as bench_app
from celery_durable import delete_rule, save_rules
from celery_durable.contrib.workers import WorkerProcesses

RULE = "bench rule"
LIMIT = 2.0  # seconds: the promise


def rule(tag: str) -> dict[str, Any]:
    return {
        "name": RULE,
        "trigger": {
            "event": "task.failed",
            "conditions": {"task_name_pattern": bench_app.TASK_NAME},
        },
        "action": {"type": "bench_mark", "tag": tag},
        "circuit_breaker": {"max_executions": 100_000},
    }


class Probes:
    """A thread sending one failing task to every queue each `interval` seconds."""

    def __init__(self, app: Any, queues: list[str], interval: float):
        self.app = app
        self.queues = queues
        self.interval = interval
        self.stopping = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="probes", daemon=True)

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            for queue in self.queues:
                self.sent += 1
                self.app.send_task(bench_app.TASK_NAME, args=(self.sent,), queue=queue)

    def __enter__(self) -> Probes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)


def marks(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(m) for m in client.lrange(bench_app.MARKS_KEY, 0, -1)]


def first_marks(
    client: redis.Redis, tag: str, since: float, workers: list[str], deadline: bench.Deadline
) -> dict[str, float]:
    """Per worker, the delay of its first failure acted on with `tag` (after `since`)."""
    found: dict[str, float] = {}
    while len(found) < len(workers):
        for mark in marks(client):
            if mark["tag"] == tag and mark["ts"] >= since and mark["worker"] not in found:
                found[mark["worker"]] = mark["ts"] - since
        if len(found) < len(workers):
            deadline.remaining()
            time.sleep(0.01)
    return found


def measure_changes(
    client: redis.Redis, app: Any, workers: list[str], args: argparse.Namespace
) -> dict[str, list[float]]:
    delays: dict[str, list[float]] = {"add": [], "edit": [], "delete": []}
    for index in range(args.changes):
        deadline = bench.Deadline(args.timeout, f"change {index + 1}")
        bench.log(f"change {index + 1} of {args.changes}: add, edit, delete")
        client.delete(bench_app.MARKS_KEY)
        began = time.time()
        save_rules([rule(f"add-{index}")], app=app)
        delays["add"] += first_marks(client, f"add-{index}", began, workers, deadline).values()
        began = time.time()
        save_rules([rule(f"edit-{index}")], app=app)
        delays["edit"] += first_marks(client, f"edit-{index}", began, workers, deadline).values()
        began = time.time()
        delete_rule(RULE, app=app)
        time.sleep(args.watch)  # a delete shows as the absence of marks: watch a while
        late = [m["ts"] - began for m in marks(client) if m["ts"] >= began]
        delays["delete"].append(max(late, default=0.0))
    return delays


def measure_restarts(url: str, args: argparse.Namespace) -> list[float]:
    """Seconds from stopping plain Celery workers warmly to their successors answering a ping."""
    seconds = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as logs,
        WorkerProcesses(
            url,
            logs,
            max_running=args.workers,
            app="benchmarks.rule_changes_app",
            env={bench_app.CONFIG_ENV: "plain"},
            url_env=bench_app.REDIS_URL_ENV,
            cwd=bench.ROOT,
            loglevel="warning",
            ready_line=None,
        ) as processes,
    ):
        running = processes.start_many(args.workers, args.concurrency, timeout=bench.READY_TIMEOUT)
        for index in range(args.restarts):
            bench.log(f"plain Celery: restart {index + 1} of {args.restarts}")
            began = time.monotonic()
            for worker in running:
                worker.terminate()
            for worker in running:
                worker.wait_stopped(bench.STOP_TIMEOUT)
            running = processes.start_many(
                args.workers, args.concurrency, timeout=bench.READY_TIMEOUT
            )
            seconds.append(time.monotonic() - began)
        processes.stop_all(bench.STOP_TIMEOUT)
    return seconds


def run(url: str, args: argparse.Namespace) -> bench.Report:
    client = redis.Redis.from_url(url)
    app = bench_app.make_app(url, "durable")
    queues = [f"rc{i + 1}" for i in range(args.workers)]
    try:
        with contextlib.ExitStack() as stack:
            started = [
                stack.enter_context(
                    bench.celery_worker(
                        "benchmarks.rule_changes_app",
                        url,
                        name=queue,
                        url_env=bench_app.REDIS_URL_ENV,
                        concurrency=args.concurrency,
                        extra_args=["-Q", queue],
                        env={bench_app.CONFIG_ENV: "durable"},
                        durable=True,
                    )
                )
                for queue in queues
            ]
            workers = [w.hostname for w in started]
            with Probes(app, queues, args.interval) as probes:
                delays = measure_changes(client, app, workers, args)
            probes_sent = probes.sent
        restarts = measure_restarts(url, args)
    finally:
        client.close()
    every = [d for found in delays.values() for d in found]
    restart = statistics.median(restarts)
    summary = {
        kind: {"median": statistics.median(found), "max": max(found)}
        for kind, found in delays.items()
    }
    return {
        "workers": args.workers,
        "changes": args.changes,
        "interval": args.interval,
        "probes_sent": probes_sent,
        "delays": delays,
        "summary": summary,
        "max_delay": max(every),
        "within_limit": max(every) <= LIMIT,
        "plain_restart_seconds": restarts,
        "plain_restart_median": restart,
        "live_over_restart": {
            kind: bench.ratio(figures["median"], restart) for kind, figures in summary.items()
        },
    }


def print_table(report: bench.Report) -> None:
    print(
        f"{report['workers']} workers, {report['changes']} rounds of add/edit/delete, "
        f"a failing task to each worker every {report['interval'] * 1000:g} ms\n"
    )
    print(f"{'':<34}{'median (ms)':>12}{'max (ms)':>10}{'/ restart':>11}")
    for kind, label in (("add", "add a rule"), ("edit", "edit it"), ("delete", "delete it")):
        figures = report["summary"][kind]
        print(
            f"{label:<34}{figures['median'] * 1000:>12.0f}{figures['max'] * 1000:>10.0f}"
            f"{bench.times(report['live_over_restart'][kind], 3):>11}"
        )
    restarts = report["plain_restart_seconds"]
    print(
        f"{'plain Celery: restart the workers':<34}{report['plain_restart_median'] * 1000:>12.0f}"
        f"{max(restarts) * 1000:>10.0f}{'1x':>11}"
    )
    verdict = "within" if report["within_limit"] else "NOT within"
    print(
        f"\nslowest change reached every worker in {report['max_delay'] * 1000:.0f} ms: "
        f"{verdict} the {LIMIT:g} s promise"
    )


TIMEOUT = 30.0  # seconds allowed per change (--timeout)
QUICK = {"changes": 1, "restarts": 1}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--changes", type=int, default=5, help="rounds of add, edit, delete")
    parser.add_argument(
        "--interval", type=float, default=0.01, help="seconds between probes of each worker"
    )
    parser.add_argument(
        "--watch", type=float, default=2.5, help="seconds to watch for a deleted rule acting"
    )
    parser.add_argument("--restarts", type=int, default=3, help="restarts of plain Celery")


def check(args: argparse.Namespace) -> str | None:
    if args.workers < 1 or args.changes < 1 or args.restarts < 1:
        return "--workers, --changes and --restarts must be at least 1"
    if args.interval <= 0 or args.watch <= LIMIT:
        return f"--interval must be positive and --watch more than {LIMIT:g} s"
    return None


if __name__ == "__main__":
    bench.main(__name__)
