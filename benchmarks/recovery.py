"""Recovery after kill -9 of a worker: celery_durable against plain Celery.

One run starts a private appendonly redis-server and, for each scenario, two
real `celery -A benchmarks.recovery worker --pool prefork --concurrency 2`
processes (`tests.worker_processes.WorkerProcess`) on it, starts `--runs`
pieces of work of `--steps` steps of `--step-seconds` each, and when about
half of all steps are done kills one worker with SIGKILL, main process and
pool processes together. Scenarios:

- celery_durable, default detection (`durable_worker_timeout` 10 s,
  `durable_heartbeat_interval` 2 s), and quick detection (3 s, 0.5 s):
  `--runs` runs of a workflow of `--steps` steps. The kill lands while both
  of the victim's pool processes are inside runs with three or more steps to
  go (runs the victim had received but not claimed are not recovered, see
  tests/faults/test_unclaimed_runs.py; the benchmark measures the takeover).
- plain Celery: `--runs` chains of `--steps` `acks_late` tasks, the worker
  app without celery_durable, the broker's `visibility_timeout` at 30 s: the
  messages the victim held come back only when that timeout has passed and a
  surviving worker's kombu sweeps the unacked messages. kombu 5.7 sweeps
  every `unacked_restore_interval` (10 s) times `unacked_restore_throttle`
  (10), so about every 100 s by default; a second plain run sets the
  throttle to 1 (a sweep every 10 s), the best plain Celery can do with a
  30 s visibility timeout.

Figures, in seconds from the kill:

- detected: the `worker.offline` event (celery_durable only);
- first resumed step: (a) the `ts` of the first `step.completed` that follows
  a `workflow.executing` with `takeover`; for plain Celery, the end of the
  first redelivered task (a task whose body ran twice);
- all done: (b) the last run's (chain's) completion; "not recovered" if it
  did not come within `--durable-wait` / `--plain-wait` seconds.

And how many step bodies ran twice (at least once delivery of the step that
was running at the kill). Ratios are plain Celery's times over
celery_durable's, from the same invocation.

    python benchmarks/recovery.py [--runs 100] [--steps 10] [--step-seconds 0.03]
        [--plain-wait 90] [--durable-wait 90] [--json]

Progress goes to stderr, the figures to stdout (a table, or JSON with --json).
Worker logs are kept in a temporary directory, printed on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis
from celery import Celery, chain

import celery_durable
from celery_durable import get_context, step, workflow
from celery_durable.codec import unpackb
from celery_durable.extension import extension_for

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/recovery.py` from anywhere

from tests.apps import NOWHERE_URL, REDIS_URL_ENV  # noqa: E402

APP_MODULE = "benchmarks.recovery"
PLAIN_ENV = "CELERY_DURABLE_RECOVERY_PLAIN"  # "1": the worker app without celery_durable
HEARTBEAT_ENV = "CELERY_DURABLE_RECOVERY_HEARTBEAT"
TIMEOUT_ENV = "CELERY_DURABLE_RECOVERY_WORKER_TIMEOUT"
THROTTLE_ENV = "CELERY_DURABLE_RECOVERY_RESTORE_THROTTLE"  # kombu's unacked_restore_throttle
VISIBILITY_TIMEOUT = 30  # seconds, for the plain Celery baseline
CONCURRENCY = 2
STEPS_KEY = "bench:steps"  # every step body, both sides: INCR
DONE_KEY = "bench:plain:done"  # chain id -> time its last task ended
ENDED_KEY = "bench:plain:ended"  # "<chain>:<position>" -> time the task body ended


def make_app(
    url: str,
    *,
    durable: bool = True,
    heartbeat: float | None = None,
    worker_timeout: float | None = None,
    restore_throttle: int | None = None,
    main: str = "recovery",
) -> Celery:
    app = Celery(main, broker=url, set_as_current=False)
    transport_options: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT}
    if restore_throttle is not None:
        transport_options["unacked_restore_throttle"] = restore_throttle
    app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,  # both sides: one message per pool process
        broker_transport_options=transport_options,
    )
    if durable:
        app.conf.update(durable_redis_url=url)
        if heartbeat is not None:
            app.conf.durable_heartbeat_interval = heartbeat
        if worker_timeout is not None:
            app.conf.durable_worker_timeout = worker_timeout
        celery_durable.install(app)
    return app


def _from_env(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


# The workers' app (`celery -A benchmarks.recovery worker`), set up from the environment.
app = make_app(
    os.environ.get(REDIS_URL_ENV) or NOWHERE_URL,
    durable=os.environ.get(PLAIN_ENV) != "1",
    heartbeat=_from_env(HEARTBEAT_ENV),
    worker_timeout=_from_env(TIMEOUT_ENV),
    restore_throttle=int(os.environ[THROTTLE_ENV]) if os.environ.get(THROTTLE_ENV) else None,
)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(app.conf.broker_url)


def count_key(piece: str, position: int) -> str:
    return f"bench:count:{piece}:{position}"


# -- celery_durable ----------------------------------------------------------------


@step(name="recovery.work")
def work(position: int, seconds: float) -> int:
    client = extension_for().redis
    entered = int(client.incr(count_key(get_context().run_id, position)))
    client.incr(STEPS_KEY)
    time.sleep(seconds)
    return entered


@workflow(name="recovery.steps")
def steps(count: int, seconds: float) -> list[int]:
    return [work(position, seconds) for position in range(count)]


# -- plain Celery ------------------------------------------------------------------------

_plain_client: redis.Redis | None = None


@app.task(name="recovery.plain_step", acks_late=True, ignore_result=True)
def plain_step(chain_id: str, position: int, seconds: float, last: bool) -> None:
    global _plain_client
    if _plain_client is None:
        _plain_client = _redis()
    client = _plain_client
    client.incr(count_key(chain_id, position))
    client.incr(STEPS_KEY)
    time.sleep(seconds)
    now = time.time()
    client.hset(ENDED_KEY, f"{chain_id}:{position}", repr(now))
    if last:
        client.zadd(DONE_KEY, {chain_id: now})


# -- the benchmark ---------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Figures:
    scenario: str
    detection: str
    detected_s: float | None = None
    first_resumed_step_s: float | None = None
    all_done_s: float | None = None
    not_recovered_within_s: float | None = None
    unfinished: int = 0
    taken_over: int = 0
    steps_run_twice: int = 0
    steps_run_more: int = 0
    total_s: float = 0.0
    notes: list[str] = field(default_factory=list)


class Workers:
    """Two worker subprocesses of this module; every one killed on exit."""

    def __init__(self, url: str, log_dir: Path, env: dict[str, str]):
        from tests.worker_processes import WorkerProcess

        self.control = Celery("recovery-control", broker=url, set_as_current=False)
        self.workers = [
            WorkerProcess(
                url,
                log_dir / f"worker-{uuid.uuid4().hex[:6]}.log",
                app=APP_MODULE,
                concurrency=CONCURRENCY,
                env=env,
            )
            for _ in range(2)
        ]

    def __enter__(self) -> Workers:
        for worker in self.workers:
            worker.start()
        deadline = time.monotonic() + 60
        for worker in self.workers:
            while not self.control.control.ping(destination=[worker.hostname], timeout=0.25):
                if not worker.is_alive():
                    raise RuntimeError(f"{worker} exited\n{worker.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{worker} did not answer a ping\n{worker.tail()}")
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            for worker in self.workers:
                log(worker.tail(20))
        for worker in self.workers:
            if worker.is_alive():
                try:
                    worker.stop(timeout=20)
                except Exception as exc:
                    log(f"{worker} did not stop cleanly: {exc!r}")
            worker.close()
        self.control.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g}s: {what}")
        time.sleep(0.005)


def durable_scenario(
    url: str, log_dir: Path, args: argparse.Namespace, heartbeat: float, worker_timeout: float
) -> Figures:
    figures = Figures(
        scenario="celery_durable",
        detection=f"durable_worker_timeout {worker_timeout:g}s, heartbeat {heartbeat:g}s",
    )
    env = {HEARTBEAT_ENV: str(heartbeat), TIMEOUT_ENV: str(worker_timeout)}
    client_app = make_app(
        url, heartbeat=heartbeat, worker_timeout=worker_timeout, main="recovery-client"
    )
    client_app.set_current()
    ext = extension_for(client_app)
    client = ext.redis
    began = time.monotonic()
    with Workers(url, log_dir, env) as workers:
        victim = workers.workers[0]
        runs = [
            celery_durable.start(steps, args.steps, args.step_seconds) for _ in range(args.runs)
        ]
        half = args.runs * args.steps // 2

        def victim_mid_run() -> bool:
            if int(client.get(STEPS_KEY) or 0) < half:
                return False
            held = client.smembers(ext.keys.worker_runs(victim.hostname))
            if len(held) != CONCURRENCY:
                return False
            pipe = client.pipeline(transaction=False)
            for run_id in held:
                pipe.hmget(ext.keys.run_meta(run_id.decode()), "seq", "owner")
            return all(
                owner is not None
                and owner.decode().startswith(f"{victim.hostname}/")
                and int(seq) - 2 <= args.steps - 3
                for seq, owner in pipe.execute()
            )

        wait_for(victim_mid_run, 60, "half the steps done, the victim mid-run")
        victim.kill(children=True)
        killed_at = time.time()
        log(f"  killed {victim.hostname} at {int(client.get(STEPS_KEY))} steps done")

        finals = {"completed", "failed", "cancelled", "timed_out"}

        def unfinished() -> int:
            pipe = client.pipeline(transaction=False)
            for run in runs:
                pipe.hget(ext.keys.run_meta(run.id), "status")
            return sum(1 for s in pipe.execute() if (s or b"").decode() not in finals)

        try:
            wait_for(lambda: unfinished() == 0, args.durable_wait, "every run done")
        except TimeoutError:
            figures.not_recovered_within_s = args.durable_wait
            figures.unfinished = unfinished()

        last_done = 0.0
        firsts = []
        for run in runs:
            events = ext.journal.read(run.id)
            if events and events[-1].type == "workflow.completed":
                last_done = max(last_done, events[-1].ts)
            takeover = next(
                (e for e in events if e.type == "workflow.executing" and "takeover" in e.data),
                None,
            )
            if takeover is not None:
                figures.taken_over += 1
                resumed = next(
                    (e for e in events if e.type == "step.completed" and e.seq > takeover.seq),
                    None,
                )
                if resumed is not None:
                    firsts.append(resumed.ts)
        if not figures.unfinished:
            figures.all_done_s = last_done - killed_at
        if firsts:
            figures.first_resumed_step_s = min(firsts) - killed_at
        offline = [
            unpackb(fields[b"e"])
            for _, fields in client.xrange(ext.keys.events())
            if unpackb(fields[b"e"])["type"] == "worker.offline"
        ]
        if offline:
            figures.detected_s = offline[0]["ts"] - killed_at
        _count_repeats(client, figures, [run.id for run in runs], args.steps)
    figures.total_s = time.monotonic() - began
    client_app.close()
    return figures


def plain_scenario(
    url: str, log_dir: Path, args: argparse.Namespace, restore_throttle: int | None
) -> Figures:
    sweep = "kombu default sweep" if restore_throttle is None else "sweep every 10s"
    figures = Figures(
        scenario="plain Celery chains",
        detection=f"acks_late, visibility_timeout {VISIBILITY_TIMEOUT}s, {sweep}",
    )
    client_app = make_app(url, durable=False, main="recovery-plain-client")
    client = redis.Redis.from_url(url)
    env = {PLAIN_ENV: "1"}
    if restore_throttle is not None:
        env[THROTTLE_ENV] = str(restore_throttle)
    began = time.monotonic()
    with Workers(url, log_dir, env) as workers:
        victim = workers.workers[0]
        chain_ids = [uuid.uuid4().hex for _ in range(args.runs)]
        for chain_id in chain_ids:
            chain(
                client_app.signature(
                    "recovery.plain_step",
                    args=(chain_id, position, args.step_seconds, position == args.steps - 1),
                    immutable=True,
                )
                for position in range(args.steps)
            ).apply_async()
        half = args.runs * args.steps // 2
        wait_for(lambda: int(client.get(STEPS_KEY) or 0) >= half, 60, "half the steps done")
        victim.kill(children=True)
        killed_at = time.time()
        log(f"  killed {victim.hostname} at {int(client.get(STEPS_KEY))} steps done")

        try:
            wait_for(lambda: client.zcard(DONE_KEY) == args.runs, args.plain_wait, "all chains")
            figures.all_done_s = max(s for _, s in client.zrange(DONE_KEY, 0, -1, withscores=True))
            figures.all_done_s -= killed_at
        except TimeoutError:
            figures.not_recovered_within_s = args.plain_wait
            figures.unfinished = args.runs - client.zcard(DONE_KEY)
        _count_repeats(client, figures, chain_ids, args.steps)
        ended = client.hgetall(ENDED_KEY)
        redone = [
            float(ended[f"{chain_id}:{position}".encode()])
            for chain_id in chain_ids
            for position, n in enumerate(_counts(client, chain_id, args.steps))
            if n >= 2 and f"{chain_id}:{position}".encode() in ended
        ]
        if redone:
            figures.first_resumed_step_s = min(redone) - killed_at
        figures.taken_over = len(redone)
    figures.total_s = time.monotonic() - began
    client.close()
    client_app.close()
    return figures


def _counts(client: redis.Redis, piece: str, count: int) -> list[int]:
    values = client.mget([count_key(piece, position) for position in range(count)])
    return [int(v or 0) for v in values]


def _count_repeats(client: redis.Redis, figures: Figures, pieces: list[str], count: int) -> None:
    for piece in pieces:
        for n in _counts(client, piece, count):
            figures.steps_run_twice += n == 2
            figures.steps_run_more += n > 2


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(report: dict[str, Any]) -> None:
    env = report["environment"]
    print(
        f"recovery after kill -9 of 1 of 2 workers (prefork, concurrency {CONCURRENCY}): "
        f"{env['runs']} runs of {env['steps']} steps of {env['step_seconds'] * 1000:g} ms; "
        f"celery {env['celery']}, kombu {env['kombu']}, redis-py {env['redis_py']}, "
        f"Python {env['python']}, {env['cpus']} CPUs"
    )
    print("seconds from the kill")
    header = (
        f"{'':<22}{'detection':<58}{'detected':>9}{'first resumed step':>20}"
        f"{'all done':>10}{'steps run twice':>17}"
    )
    print(header)
    for row in report["scenarios"]:
        done = _seconds(row["all_done_s"])
        if row["not_recovered_within_s"] is not None:
            done = f"not recovered within {row['not_recovered_within_s']:g} s"
            done += f" ({row['unfinished']} unfinished)"
        print(
            f"{row['scenario']:<22}{row['detection']:<58}{_seconds(row['detected_s']):>9}"
            f"{_seconds(row['first_resumed_step_s']):>20} {done:>9}{row['steps_run_twice']:>17}"
        )
    print("ratios, plain Celery's time over celery_durable's:")
    for ratio in report["ratios"]:
        print(
            f"  plain ({ratio['plain']}) / durable ({ratio['durable']}): first resumed step "
            f"{ratio['first_resumed_step']}, all done {ratio['all_done']}"
        )


def ratios(durable: Figures, plain: Figures) -> dict[str, str]:
    def ratio(plain_value: float | None, durable_value: float | None, bound: float | None) -> str:
        if durable_value is None or durable_value <= 0:
            return "n/a"
        if plain_value is None:
            return f"> {bound / durable_value:.1f}x (plain not recovered)" if bound else "n/a"
        return f"{plain_value / durable_value:.1f}x"

    return {
        "durable": durable.detection,
        "plain": plain.detection,
        "first_resumed_step": ratio(
            plain.first_resumed_step_s, durable.first_resumed_step_s, plain.not_recovered_within_s
        ),
        "all_done": ratio(plain.all_done_s, durable.all_done_s, plain.not_recovered_within_s),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-seconds", type=float, default=0.03)
    parser.add_argument("--durable-wait", type=float, default=90.0)
    parser.add_argument("--plain-wait", type=float, default=150.0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    from benchmarks._harness import exit_on_sigterm
    from celery_durable.contrib.redis_server import RedisServer

    exit_on_sigterm()
    scenarios: list[Figures] = []
    with (
        tempfile.TemporaryDirectory(prefix="recovery-bench-") as logs,
        RedisServer(appendonly=True) as server,
    ):
        flush = redis.Redis.from_url(server.url)
        for heartbeat, timeout in ((2.0, 10.0), (0.5, 3.0)):
            flush.flushdb()
            log(f"celery_durable, worker timeout {timeout:g}s, heartbeat {heartbeat:g}s ...")
            scenarios.append(durable_scenario(server.url, Path(logs), args, heartbeat, timeout))
            log(f"  {scenarios[-1]}")
        plains = []
        for throttle in (None, 1):
            flush.flushdb()
            log(f"plain Celery, visibility_timeout {VISIBILITY_TIMEOUT}s, throttle {throttle} ...")
            plains.append(plain_scenario(server.url, Path(logs), args, throttle))
            log(f"  {plains[-1]}")
        flush.close()
    report = {
        "environment": {
            "runs": args.runs,
            "steps": args.steps,
            "step_seconds": args.step_seconds,
            "celery": version("celery"),
            "kombu": version("kombu"),
            "redis_py": version("redis"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "scenarios": [asdict(s) for s in [*scenarios, *plains]],
        "ratios": [ratios(s, plain) for plain in plains for s in scenarios],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
