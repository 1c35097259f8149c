"""Recovery after kill -9 of a worker: celery_durable against plain Celery.

One run starts a private appendonly redis-server and, for each scenario, two
real `celery -A benchmarks.recovery worker --pool prefork --concurrency 2`
processes (`celery_durable.contrib.workers`) on it, starts `--runs`
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
        [--plain-wait 150] [--durable-wait 90] [--concurrency 2]
        [--redis-url URL] [--json] [--quick]

Progress goes to stderr, the figures to stdout (a table, or JSON with --json).
Worker logs are kept in a temporary directory, printed on failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/recovery.py`: the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from celery import Celery, chain

import celery_durable
from benchmarks import _harness as bench
from celery_durable import get_context, step, workflow
from celery_durable.codec import unpackb
from celery_durable.contrib.workers import WorkerProcess
from celery_durable.extension import extension_for

APP_MODULE = "benchmarks.recovery"
REDIS_URL_ENV = "CELERY_DURABLE_BENCH_REDIS_URL"
PLAIN_ENV = "CELERY_DURABLE_RECOVERY_PLAIN"  # "1": the worker app without celery_durable
HEARTBEAT_ENV = "CELERY_DURABLE_RECOVERY_HEARTBEAT"
TIMEOUT_ENV = "CELERY_DURABLE_RECOVERY_WORKER_TIMEOUT"
THROTTLE_ENV = "CELERY_DURABLE_RECOVERY_RESTORE_THROTTLE"  # kombu's unacked_restore_throttle
VISIBILITY_TIMEOUT = 30  # seconds, for the plain Celery baseline
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
    os.environ.get(REDIS_URL_ENV) or "redis://127.0.0.1:1/0",  # a closed port, unless a worker
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


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    bench.wait_for(what, condition, bench.Deadline(timeout, f"waiting for {what}"))


def two_workers(
    url: str, args: argparse.Namespace, env: dict[str, str], durable: bool
) -> AbstractContextManager[list[WorkerProcess]]:
    return bench.celery_workers(
        APP_MODULE,
        url,
        url_env=REDIS_URL_ENV,
        count=2,
        concurrency=args.concurrency,
        env=env,
        durable=durable,
    )


def durable_scenario(
    url: str, args: argparse.Namespace, heartbeat: float, worker_timeout: float
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
    with two_workers(url, args, env, durable=True) as (victim, _survivor):
        runs = [
            celery_durable.start(steps, args.steps, args.step_seconds) for _ in range(args.runs)
        ]
        half = args.runs * args.steps // 2

        def victim_mid_run() -> bool:
            if int(client.get(STEPS_KEY) or 0) < half:
                return False
            held = client.smembers(ext.keys.worker_runs(victim.hostname))
            if len(held) != args.concurrency:
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
        bench.log(f"  killed {victim.hostname} at {int(client.get(STEPS_KEY))} steps done")

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


def plain_scenario(url: str, args: argparse.Namespace, restore_throttle: int | None) -> Figures:
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
    with two_workers(url, args, env, durable=False) as (victim, _survivor):
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
        bench.log(f"  killed {victim.hostname} at {int(client.get(STEPS_KEY))} steps done")

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


def print_table(report: bench.Report) -> None:
    print(
        f"recovery after kill -9 of 1 of 2 workers: {report['runs']} runs of "
        f"{report['steps']} steps of {report['step_seconds'] * 1000:g} ms"
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
        if plain_value is None and bound and durable_value:
            return f"> {bench.times(bench.ratio(bound, durable_value), 1)} (plain not recovered)"
        return bench.times(bench.ratio(plain_value, durable_value), 1)

    return {
        "durable": durable.detection,
        "plain": plain.detection,
        "first_resumed_step": ratio(
            plain.first_resumed_step_s, durable.first_resumed_step_s, plain.not_recovered_within_s
        ),
        "all_done": ratio(plain.all_done_s, durable.all_done_s, plain.not_recovered_within_s),
    }


def run(url: str, args: argparse.Namespace) -> bench.Report:
    flush = redis.Redis.from_url(url)
    scenarios: list[Figures] = []
    for heartbeat, timeout in ((2.0, 10.0), (0.5, 3.0)):
        flush.flushdb()
        bench.log(f"celery_durable, worker timeout {timeout:g}s, heartbeat {heartbeat:g}s ...")
        scenarios.append(durable_scenario(url, args, heartbeat, timeout))
        bench.log(f"  {scenarios[-1]}")
    plains = []
    for throttle in (None, 1):
        flush.flushdb()
        bench.log(
            f"plain Celery, visibility_timeout {VISIBILITY_TIMEOUT}s, throttle {throttle} ..."
        )
        plains.append(plain_scenario(url, args, throttle))
        bench.log(f"  {plains[-1]}")
    flush.close()
    return {
        "runs": args.runs,
        "steps": args.steps,
        "step_seconds": args.step_seconds,
        "scenarios": [asdict(s) for s in [*scenarios, *plains]],
        "ratios": [ratios(s, plain) for plain in plains for s in scenarios],
    }


QUICK = {"runs": 20, "durable_wait": 40.0, "plain_wait": 20.0}
APPENDONLY = True  # a redis-server as durable as one in production


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-seconds", type=float, default=0.03)
    parser.add_argument("--durable-wait", type=float, default=90.0)
    parser.add_argument("--plain-wait", type=float, default=150.0)


if __name__ == "__main__":
    bench.main(__name__)
