"""Web polling: do 50 dashboards polling `celery durable web` slow the workers?

One run starts a private redis-server (unless `--redis-url` is given),
`--workers` real `celery -A benchmarks.fanout_app worker` processes, and
`celery -A benchmarks.fanout_app durable web` as its own process, all on the
one Redis. It then measures the workers' throughput twice over, with no
poller and with `--pollers` concurrent clients (one process of threads with
kept-alive connections, each doing what an open dashboard does: one GET every `--interval`
seconds, 2 as the page does, of the page it shows; the clients are spread
over the runs list `/api/runs`, the newest run's `/api/runs/<id>` and
`/api/workers`). `--interval 0.2` is ten times the load, a stress figure:

- durable: one workflow mapping `--steps` no-op steps (each its own Celery
  task, recorded once), awaited with `RunHandle.result()`;
- plain: a Celery group of as many no-op tasks, awaited with `.get()`.

Each side is measured `--repeat` times with and without the pollers,
alternating, after a warm-up; the figures are medians of wall time, shown as
steps (tasks) per second. The ratios: with pollers over without (1.00x: the
pollers cost nothing), and durable over plain Celery in the same conditions.
The pollers' own figures (requests answered, errors, latency) and the CPU
the server process used are printed too: on a 2-core machine the server and
the pollers' process take their CPU from the workers, which a deployment
with the browsers elsewhere does not.

    python benchmarks/web_polling.py [--steps 200] [--repeat 3] [--workers 2]
        [--pollers 50] [--interval 2.0] [--concurrency 2] [--redis-url URL]
        [--json] [--quick]

Goal (issue 14): 50 concurrent pollers do not slow the workers measurably.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):  # `python benchmarks/web_polling.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from benchmarks import _harness as bench

POLL_ONLY = "--poll-only"  # the argument that makes this script the pollers' process
WARMUP_STEPS = 20


# -- the pollers' process ---------------------------------------------------------------


def _poller(base: str, index: int, interval: float, stats: dict[str, Any]) -> None:
    """One open dashboard: one request per `interval`, on the runs list, the newest
    run's page or the workers page (pollers start on different pages).

    A thread with one kept-alive `http.client` connection: the lightest client
    at hand, since the pollers share the workers' CPU here, as browsers on
    other machines would not.
    """
    address = urlsplit(base)
    connection = http.client.HTTPConnection(
        address.hostname or "127.0.0.1", address.port, timeout=30
    )
    turn, newest = index, None
    time.sleep(interval * index / 50)  # spread the first requests as opened tabs would be
    while not stats["stop"].is_set():
        began = time.perf_counter()
        page = turn % 3
        turn += 1
        if page == 1 and newest is not None:
            path = f"/api/runs/{newest}"
        elif page == 2:
            path = "/api/workers"
        else:
            path = "/api/runs?limit=50"
        try:
            try:
                connection.request("GET", path)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException):
                connection.close()  # the server closed an idle connection: once more
                connection.request("GET", path)
                response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise OSError(f"{path}: {response.status}")
            if path.startswith("/api/runs?"):
                runs = json.loads(body)["runs"]
                newest = runs[0]["id"] if runs else None
            with stats["lock"]:
                stats["latencies"].append(time.perf_counter() - began)
                stats["requests"] += 1
        except (OSError, http.client.HTTPException, ValueError):
            with stats["lock"]:
                stats["errors"] += 1
            connection.close()
        stats["stop"].wait(max(0.0, interval - (time.perf_counter() - began)))
    connection.close()


def _poll(url: str, count: int, interval: float) -> dict[str, Any]:
    """Poll until stdin closes; then the figures, as JSON on stdout."""
    stats: dict[str, Any] = {
        "stop": threading.Event(),
        "lock": threading.Lock(),
        "requests": 0,
        "errors": 0,
        "latencies": [],
    }
    began = time.perf_counter()
    threads = [
        threading.Thread(target=_poller, args=(url, i, interval, stats), daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    print("polling", flush=True)
    sys.stdin.read()
    stats["stop"].set()
    for thread in threads:
        thread.join(30)
    seconds = time.perf_counter() - began
    latencies = stats["latencies"] or [0.0]
    return {
        "requests": stats["requests"],
        "errors": stats["errors"],
        "requests_per_second": stats["requests"] / seconds,
        "request_p50": bench.percentile(latencies, 50),
        "request_p99": bench.percentile(latencies, 99),
    }


@contextmanager
def pollers(url: str, count: int, interval: float, deadline: bench.Deadline) -> Iterator[dict]:
    """`count` pollers in their own process while the block runs; their figures after."""
    process = subprocess.Popen(
        [sys.executable, __file__, POLL_ONLY, url, str(count), str(interval)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    figures: dict[str, Any] = {"pid": process.pid}
    try:
        assert process.stdout is not None and process.stdin is not None
        if process.stdout.readline().strip() != "polling":
            raise RuntimeError("the pollers' process did not start")
        yield figures
        process.stdin.close()
        figures.update(json.loads(process.stdout.read()))
        process.wait(deadline.remaining())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- the web server -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def web_server(url: str, deadline: bench.Deadline) -> Iterator[tuple[str, int]]:
    """`celery -A benchmarks.fanout_app durable web` on a free port, as its own process."""
    from benchmarks import fanout_app
    from celery_durable.web.server import free_port

    port = free_port()
    env = {**os.environ, fanout_app.REDIS_URL_ENV: url}
    command = [sys.executable, "-m", "celery", "-A", "benchmarks.fanout_app", "durable", "web"]
    process = subprocess.Popen(
        [*command, "--port", str(port)], cwd=bench.ROOT, env=env, stdout=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"`durable web` exited with {process.returncode}")
            try:
                return httpx.get(f"{base}/api/workers", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        bench.wait_for("the web server", answers, deadline, poll=0.1)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the measurement ----------------------------------------------------------------------


Side = Callable[[int, float], Any]


def measure(side: Side, steps: int, deadline: bench.Deadline) -> float:
    began = time.perf_counter()
    result = side(steps, deadline.remaining())
    seconds = time.perf_counter() - began
    if result != steps:
        raise RuntimeError(f"{side.__name__} returned {result!r}, not {steps}")
    return seconds


def run(url: str, args: argparse.Namespace) -> bench.Report:
    from benchmarks import fanout_app
    from benchmarks.fanout import durable_noop_side, group_side

    fanout_app.use_redis(url)
    deadline = bench.Deadline(args.timeout, "the benchmark")
    sides: dict[str, Side] = {"plain": group_side, "durable": durable_noop_side}
    seconds: dict[str, dict[str, list[float]]] = {
        label: {"idle": [], "polled": []} for label in sides
    }
    polled: list[dict[str, Any]] = []
    with (
        bench.celery_workers(
            "benchmarks.fanout_app",
            url,
            url_env=fanout_app.REDIS_URL_ENV,
            count=args.workers,
            concurrency=args.concurrency,
            durable=True,
        ),
        web_server(url, deadline) as (base, web_pid),
    ):
        bench.log("warm-up")
        for side in sides.values():
            measure(side, WARMUP_STEPS, deadline)
        for index in range(args.repeat):
            bench.log(f"round {index + 1} of {args.repeat}: {args.steps} steps per side")
            order = ["idle", "polled"] if index % 2 == 0 else ["polled", "idle"]
            for condition in order:
                if condition == "idle":
                    for label, side in sides.items():
                        seconds[label]["idle"].append(measure(side, args.steps, deadline))
                    continue
                with pollers(base, args.pollers, args.interval, deadline) as figures:
                    time.sleep(args.interval)  # every poller has made its first request
                    cpu = cpu_seconds(web_pid), cpu_seconds(figures["pid"])
                    began = time.perf_counter()
                    for label, side in sides.items():
                        seconds[label]["polled"].append(measure(side, args.steps, deadline))
                    took = time.perf_counter() - began
                    figures["web_cpu"] = (cpu_seconds(web_pid) - cpu[0]) / took
                    figures["pollers_cpu"] = (cpu_seconds(figures["pid"]) - cpu[1]) / took
                polled.append(figures)
    medians = {
        label: {cond: statistics.median(values) for cond, values in by.items()}
        for label, by in seconds.items()
    }
    throughput = {
        label: {cond: args.steps / value for cond, value in by.items()}
        for label, by in medians.items()
    }
    return {
        "steps": args.steps,
        "repeat": args.repeat,
        "workers": args.workers,
        "pollers": args.pollers,
        "interval": args.interval,
        "throughput": throughput,
        "seconds": seconds,  # every measurement, to see the noise
        "polled_over_idle": {
            label: bench.ratio(by["polled"], by["idle"]) for label, by in throughput.items()
        },
        "durable_over_plain": {
            cond: bench.ratio(throughput["durable"][cond], throughput["plain"][cond])
            for cond in ("idle", "polled")
        },
        "web": {
            "requests": sum(f["requests"] for f in polled),
            "errors": sum(f["errors"] for f in polled),
            "requests_per_second": statistics.median(f["requests_per_second"] for f in polled),
            "request_p50": statistics.median(f["request_p50"] for f in polled),
            "request_p99": max(f["request_p99"] for f in polled),
            "server_cpu": statistics.median(f["web_cpu"] for f in polled),
            "pollers_cpu": statistics.median(f["pollers_cpu"] for f in polled),
        },
    }


def print_table(report: bench.Report) -> None:
    print(
        f"{report['steps']} no-op steps (tasks) per side over {report['workers']} workers, "
        f"median of {report['repeat']} rounds; {report['pollers']} dashboards, each polling every "
        f"{report['interval']:g}s\n"
    )
    polled = f"{report['pollers']} pollers"
    print(f"{'':<28}{'no pollers':>14}{polled:>14}{'polled/idle':>14}")
    for label, name in (("plain", "Celery group (tasks/s)"), ("durable", "durable map (steps/s)")):
        figures = report["throughput"][label]
        print(
            f"{name:<28}{figures['idle']:>14.1f}{figures['polled']:>14.1f}"
            f"{bench.times(report['polled_over_idle'][label]):>14}"
        )
    ratios = report["durable_over_plain"]
    print(
        f"durable / plain throughput: {bench.times(ratios['idle'])} without pollers, "
        f"{bench.times(ratios['polled'])} with"
    )
    web = report["web"]
    print(
        f"web: {web['requests']:,} requests answered ({web['requests_per_second']:.0f}/s), "
        f"{web['errors']} errors; latency p50 {web['request_p50'] * 1000:.1f} ms, "
        f"p99 {web['request_p99'] * 1000:.1f} ms; while the workers ran, the server used "
        f"{web['server_cpu'] * 100:.0f}% of a core and the pollers' process "
        f"{web['pollers_cpu'] * 100:.0f}%"
    )


TIMEOUT = 600.0
QUICK = {"steps": 40, "repeat": 1, "pollers": 10}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=200, help="steps (tasks) per side")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each condition")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--pollers", type=int, default=50, help="concurrent polling clients")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between polls (the page: 2)"
    )


def check(args: argparse.Namespace) -> str | None:
    if min(args.steps, args.repeat, args.workers, args.pollers) < 1 or args.interval <= 0:
        return "--steps, --repeat, --workers, --pollers must be at least 1, --interval positive"
    return None


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == POLL_ONLY:
        print(json.dumps(_poll(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
    else:
        bench.main(__name__)
