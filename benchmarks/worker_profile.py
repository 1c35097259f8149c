"""Where a run's time goes in a real worker: CPU per process and Redis commands per run.

`benchmarks/profile_step.py` measures a run executed in its own process;
this one measures the whole system `benchmarks/throughput.py` runs, on the
same app: a real `celery -A benchmarks.bench_app worker --pool prefork`,
the benchmark process that starts runs and waits for their results, and
the private redis-server. For `--runs` ten-step runs started back to back,
and for as many plain 10-task chains, it prints:

- CPU time per run (per chain) of each process: this one (the client:
  `start()` or `apply_async()`, and the waits for results), redis-server,
  the worker's main process (Celery's consumer; its threads, celery_durable's
  heartbeat, monitor, poller and action runner among them, also apart), and
  the pool processes together. With 2 CPUs for all of them, their sum is
  what bounds throughput;
- Redis commands executed per run (`INFO commandstats` deltas, those inside
  Lua scripts included), and, from a second, smaller pass under `MONITOR`,
  the same by who sends them: the client's journal and result commands, the
  broker's (kombu: publish, fetch, the unacked bookkeeping of every message),
  the worker's journal round trips, celery_durable's worker bookkeeping (the
  heartbeat and its record of held messages, timers, rules), and the
  commands Lua scripts run.

CPU times come from /proc (Linux only), in clock ticks (10 ms): with the
default 1,000 runs, about 0.01 ms per run.

    python benchmarks/worker_profile.py [--runs 1000] [--monitor-runs 100] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/worker_profile.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from benchmarks import _harness as bench
from benchmarks import bench_app
from benchmarks.throughput import Dispatch, durable_dispatch, plain_dispatch

WARMUP = 20
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Who sends a command, from the command and its first key (MONITOR lines).
BROKER_KEYS = ("unacked", "_kombu")
WORKER_KEYS = ("durable:worker", "durable:workers", "durable:timers", "durable:rules")


def _cpu_seconds(pid: int, thread: int | None = None) -> float:
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry))
    return found


class Processes:
    """The processes measured, by role: CPU seconds of each, read together."""

    def __init__(self, worker_pid: int, redis_pid: int):
        self.worker = worker_pid
        self.redis = redis_pid
        self.pool = _children(worker_pid)

    def cpu(self) -> dict[str, float]:
        threads = [int(t) for t in os.listdir(f"/proc/{self.worker}/task") if int(t) != self.worker]
        return {
            "client": _cpu_seconds(os.getpid()),
            "redis-server": _cpu_seconds(self.redis),
            "worker main process": _cpu_seconds(self.worker),
            "  its threads (heartbeat...)": sum(_cpu_seconds(self.worker, t) for t in threads),
            "pool processes": sum(_cpu_seconds(pid) for pid in self.pool),
        }


def _commandstats(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def _run_batch(dispatch: Dispatch, runs: int, deadline: bench.Deadline) -> float:
    began = time.perf_counter()
    waiters = [dispatch(x) for x in range(runs)]
    for wait in waiters:
        wait(deadline.remaining())
    return time.perf_counter() - began


def _family(key: str) -> str:
    """A key without its ids: one line per kind of key."""
    key = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{32}", "<id>", key)
    return re.sub(r"[^:{}]*@[^:{}]*", "<worker>", key)


def _sender(line: dict[str, Any], client_ports: set[str]) -> str:
    """Who sent a MONITOR line's command, the command, and its key's family."""
    command = str(line["command"]).split()
    name = command[0].upper()
    key = command[3] if name in ("EVALSHA", "EVAL") and len(command) > 3 else ""
    key = _family(key or (command[1] if len(command) > 1 else ""))
    if line.get("client_type") == "lua" or line.get("client_address") == "lua":
        return f"inside scripts: {name} {key}"
    side = "client" if str(line.get("client_port")) in client_ports else "worker"
    if name in ("MULTI", "EXEC") or key == "celery" or key.startswith(BROKER_KEYS):
        return f"broker ({side}): {name} {key}"
    if key.startswith("celery-task-meta"):
        return f"result backend ({side}): {name} {key}"
    if side == "client":
        return f"client: {name} {key}"
    if key.startswith(WORKER_KEYS) or name in ("PING", "HELLO", "XAUTOCLAIM", "XREADGROUP"):
        return f"worker bookkeeping: {name} {key}"
    return f"worker: {name} {key}"


def _own_ports() -> set[str]:
    """Local TCP ports of this process's sockets (/proc/net/tcp by socket inode)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[9] in inodes:
                ports.add(str(int(fields[1].rsplit(":", 1)[1], 16)))
    return ports


class Monitor:
    """MONITOR lines collected by a thread while the `with` block runs."""

    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url)
        self.lines: list[dict[str, Any]] = []

    def __enter__(self) -> Monitor:
        self._monitor = self.client.monitor().__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            while True:
                self.lines.append(self._monitor.next_command())
        except Exception:  # closed at the end of the block
            return

    def __exit__(self, *exc_info: object) -> None:
        time.sleep(0.2)  # the last lines of the block on their way
        self._monitor.connection.disconnect()
        self._thread.join(5)
        self.client.close()


def measure(
    name: str,
    dispatch: Dispatch,
    processes: Processes,
    url: str,
    args: argparse.Namespace,
) -> bench.Report:
    deadline = bench.Deadline(args.timeout, f"the {name} side")
    admin = redis.Redis.from_url(url)
    try:
        _run_batch(dispatch, WARMUP, deadline)
        bench.log(f"{name}: {args.runs} runs back to back")
        stats_before, cpu_before = _commandstats(admin), processes.cpu()
        seconds = _run_batch(dispatch, args.runs, deadline)
        cpu_after, stats_after = processes.cpu(), _commandstats(admin)
        stats_after.subtract(stats_before)
        stats_after["info"] -= 1  # our own
        bench.log(f"{name}: {args.monitor_runs} runs under MONITOR")
        ports = _own_ports()
        with Monitor(url) as monitor:
            _run_batch(dispatch, args.monitor_runs, deadline)
        ports |= _own_ports()
    finally:
        admin.close()
    senders = Counter(_sender(line, ports) for line in monitor.lines)
    return {
        "seconds": seconds,
        "cpu_ms_per_run": {
            role: (cpu_after[role] - cpu_before[role]) * 1000 / args.runs for role in cpu_after
        },
        "commands_per_run": sum((+stats_after).values()) / args.runs,
        "commands": {k: v / args.runs for k, v in sorted((+stats_after).items())},
        "by_sender": {k: v / args.monitor_runs for k, v in senders.most_common()},
    }


def run(url: str, args: argparse.Namespace) -> bench.Report:
    bench_app.use_redis(url)
    admin = redis.Redis.from_url(url)
    redis_pid = int(admin.info("server")["process_id"])
    admin.close()
    with bench.celery_worker(
        "benchmarks.bench_app", url, url_env=bench_app.REDIS_URL_ENV, concurrency=args.concurrency
    ) as worker:
        processes = Processes(worker.pid, redis_pid)
        plain = measure("plain", plain_dispatch, processes, url, args)
        durable = measure("durable", durable_dispatch, processes, url, args)
    return {
        "runs": args.runs,
        "monitor_runs": args.monitor_runs,
        "plain": plain,
        "durable": durable,
    }


def print_table(report: bench.Report) -> None:
    plain, durable = report["plain"], report["durable"]
    print(
        f"{report['runs']} ten-step runs vs as many 10-task chains, back to back; "
        f"commands by sender from {report['monitor_runs']} more under MONITOR\n"
    )
    print(f"{'CPU ms per run (chain)':<34}{'plain':>9}{'durable':>9}")
    total = {"plain": 0.0, "durable": 0.0}
    for role in durable["cpu_ms_per_run"]:
        p, d = plain["cpu_ms_per_run"][role], durable["cpu_ms_per_run"][role]
        if not role.startswith(" "):
            total["plain"] += p
            total["durable"] += d
        print(f"{role:<34}{p:>9.3f}{d:>9.3f}")
    print(f"{'all':<34}{total['plain']:>9.3f}{total['durable']:>9.3f}")
    print(f"{'seconds for the batch':<34}{plain['seconds']:>9.2f}{durable['seconds']:>9.2f}\n")
    for name, side in (("plain", plain), ("durable", durable)):
        print(f"{name}: {side['commands_per_run']:.1f} Redis commands executed per run:")
        for sender, count in side["by_sender"].items():
            if count >= 0.005:
                print(f"  {count:7.2f}  {sender}")
        print()


def options(parser: argparse.ArgumentParser) -> None:
    one = bench.at_least(1)
    parser.add_argument("--runs", type=one, default=1000, help="runs (chains) back to back")
    parser.add_argument("--monitor-runs", type=one, default=100, help="runs under MONITOR")


def check(args: argparse.Namespace) -> str | None:
    return None if os.path.isdir("/proc/self/fd") else "needs Linux's /proc"


TIMEOUT = 120.0
QUICK = {"runs": 50, "monitor_runs": 10}


if __name__ == "__main__":
    bench.main(__name__)
