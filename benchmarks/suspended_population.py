"""What suspended runs cost while they wait: Redis memory, and the timer poller's work.

One run starts a private redis-server (unless `--redis-url` is given; its
database is flushed between parts, so give only a scratch one) and measures:

(a) memory. With a real `celery worker --pool prefork --concurrency 2` of
    `benchmarks.timer_app` running, `--runs` runs of a workflow that sleeps
    one day are started and awaited until every one is `sleeping` (and the
    broker queue and its unacked set are empty again). Reported: the growth
    of `INFO memory` used_memory per sleeping run, and the bytes per run of
    its keys by `MEMORY USAGE` (event stream, meta hash, on a sample of runs)
    plus its share of the timers and runs-index sorted sets.
    Baseline, same Redis and worker: as many plain Celery tasks sent with a
    one-day countdown, held by the worker (in Redis: the `unacked` hash and
    its index), growth of used_memory per waiting task.
(b) the poller, in this process, with the worker stopped:
    - per resumed run: `TimerPoller(ext, 0.2).poll_once()` called until it
      wakes nothing, over `--due` timers due now (scheduled directly with
      pipelines), for fake run ids (dispatch sends the run task's message to
      the broker, which no worker reads); the time of its three parts
      (claim, dispatch, release) measured apart too. Done among no other
      timers and again among the largest population of future timers.
      Baseline: `app.send_task` of one plain Celery task, same Redis.
    - per empty poll: `poll_once()` with nothing due, among 0, 1k, 10k and
      100k timers due in a day (client-observed µs per poll, and the
      server-side µs per call of the claim script from INFO commandstats);
      a PING round trip is printed as the floor.

    python benchmarks/suspended_population.py [--runs 10000] [--due 1000]
        [--populations 0,1000,10000,100000] [--tuned-stream-node-max-bytes 1024]
        [--concurrency 2] [--redis-url URL] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/suspended_population.py`: the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import celery
import redis

import celery_durable
from benchmarks import _harness as bench
from benchmarks import timer_app
from celery_durable import start
from celery_durable.extension import DurableExtension, extension_for
from celery_durable.timers.store import WAKE
from celery_durable.worker.poller import BATCH, LEASE, TimerPoller

DAY = 86_400.0
QUEUE = "celery"  # the app's default queue: run tasks and plain tasks alike
SAMPLE_RUNS = 200
ROUNDS = 5  # of --due resumes, and of as many plain sends
EMPTY_POLLS = 2000
CHUNK = 10_000  # members per ZADD when building a population


# -- helpers ---------------------------------------------------------------------------


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def settle(client: redis.Redis, pause: float = 0.3) -> int:
    """used_memory once it stops moving (lazy frees, client buffers)."""
    previous = used_memory(client)
    for _ in range(10):
        time.sleep(pause)
        current = used_memory(client)
        if abs(current - previous) < 1024:
            return current
        previous = current
    return previous


def memory_usage(client: redis.Redis, key: str) -> int:
    """Exact MEMORY USAGE of `key` (all elements sampled); 0 when it does not exist."""
    return int(client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0") or 0)


def fake_run_ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


def schedule_directly(client: redis.Redis, ext: DurableExtension, due: dict[str, float]) -> None:
    """ZADD `wake:<run id>` members as `TimerStore.schedule` does, in big pipelined chunks."""
    items = [(f"{WAKE}:{run_id}", at) for run_id, at in due.items()]
    pipe = client.pipeline(transaction=False)
    for first in range(0, len(items), CHUNK):
        pipe.zadd(ext.timers.key, dict(items[first : first + CHUNK]))
    pipe.execute()


# -- (a) memory of sleeping runs -------------------------------------------------------


@dataclass(frozen=True)
class DurableMemory:
    runs: int
    seconds_to_suspend_all: float
    used_memory_delta_per_run: float
    events_per_run: float
    stream_bytes: float
    meta_bytes: float
    inbox_bytes: float
    timers_share_bytes: float
    runs_index_share_bytes: float
    keys_total_bytes: float


@dataclass(frozen=True)
class PlainMemory:
    tasks: int
    seconds_to_hold_all: float
    used_memory_delta_per_task: float
    unacked_share_bytes: float
    unacked_index_share_bytes: float


def broker_idle(client: redis.Redis) -> bool:
    pipe = client.pipeline(transaction=False)
    pipe.llen(QUEUE)
    pipe.hlen("unacked")
    queued, unacked = pipe.execute()
    return queued == 0 and unacked == 0


def wait_all_sleeping(
    client: redis.Redis, ext: DurableExtension, run_ids: list[str], deadline: bench.Deadline
) -> None:
    left = list(run_ids)
    while True:
        pipe = client.pipeline(transaction=False)
        for run_id in left:
            pipe.hget(ext.keys.run_meta(run_id), "status")
        statuses = pipe.execute()
        bad = {s for s in statuses if s not in (b"sleeping", b"pending", b"running")}
        if bad:
            raise RuntimeError(f"runs ended up {bad}: see the worker")
        left = [r for r, s in zip(left, statuses, strict=True) if s != b"sleeping"]
        if not left and broker_idle(client):
            return
        if deadline.remaining():
            time.sleep(0.25)


def durable_memory(client: redis.Redis, ext: DurableExtension, runs: int) -> DurableMemory:
    before = settle(client)
    timers_before = memory_usage(client, ext.timers.key)
    index_before = memory_usage(client, ext.keys.runs_index())
    pending_before = ext.timers.pending()
    began = time.perf_counter()
    run_ids = [start(timer_app.sleeper, i, DAY).id for i in range(runs)]
    bench.log(
        f"(a) {runs} runs started in {time.perf_counter() - began:.1f}s; waiting for all to sleep"
    )
    wait_all_sleeping(client, ext, run_ids, bench.Deadline(150, f"{runs} runs to suspend"))
    seconds = time.perf_counter() - began
    after = settle(client)
    timers_set = ext.timers.pending() - pending_before
    if timers_set != runs:
        raise RuntimeError(f"{runs} runs sleep but {timers_set} timers were set")

    sample = random.Random(7).sample(run_ids, min(SAMPLE_RUNS, runs))
    pipe = client.pipeline(transaction=False)
    for run_id in sample:
        for key in (ext.keys.run_events(run_id), ext.keys.run_meta(run_id)):
            pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        pipe.execute_command("MEMORY", "USAGE", ext.keys.run_inbox(run_id), "SAMPLES", "0")
        pipe.xlen(ext.keys.run_events(run_id))
    sizes = pipe.execute()
    stream = statistics.fmean(sizes[0::4])
    meta = statistics.fmean(sizes[1::4])
    inbox = statistics.fmean(s or 0 for s in sizes[2::4])
    events = statistics.fmean(sizes[3::4])
    timers = (memory_usage(client, ext.timers.key) - timers_before) / runs
    index = (memory_usage(client, ext.keys.runs_index()) - index_before) / runs
    return DurableMemory(
        runs=runs,
        seconds_to_suspend_all=seconds,
        used_memory_delta_per_run=(after - before) / runs,
        events_per_run=events,
        stream_bytes=stream,
        meta_bytes=meta,
        inbox_bytes=inbox,
        timers_share_bytes=timers,
        runs_index_share_bytes=index,
        keys_total_bytes=stream + meta + inbox + timers + index,
    )


def plain_memory(client: redis.Redis, tasks: int) -> PlainMemory:
    before = settle(client)
    unacked_before = memory_usage(client, "unacked")
    index_before = memory_usage(client, "unacked_index")
    began = time.perf_counter()
    for i in range(tasks):
        timer_app.noop.apply_async((i,), countdown=DAY)
    bench.log(f"(a) {tasks} plain countdown tasks sent; waiting for the worker to hold them all")
    deadline = bench.Deadline(150, f"the worker to take {tasks} countdown tasks")
    while client.llen(QUEUE) or client.hlen("unacked") < tasks:
        deadline.remaining()
        time.sleep(0.25)
    seconds = time.perf_counter() - began
    after = settle(client)
    return PlainMemory(
        tasks=tasks,
        seconds_to_hold_all=seconds,
        used_memory_delta_per_task=(after - before) / tasks,
        unacked_share_bytes=(memory_usage(client, "unacked") - unacked_before) / tasks,
        unacked_index_share_bytes=(memory_usage(client, "unacked_index") - index_before) / tasks,
    )


def part_a(url: str, client: redis.Redis, ext: DurableExtension, args: argparse.Namespace) -> dict:
    with bench.celery_worker(
        "benchmarks.timer_app", url, url_env=timer_app.REDIS_URL_ENV, concurrency=args.concurrency
    ):
        bench.log("(a) warm-up")
        for run in [start(timer_app.sleeper, i, 0.05) for i in range(4)]:
            run.result(timeout=30)
        deadline = bench.Deadline(30, "the broker to drain after the warm-up")
        while not broker_idle(client):
            deadline.remaining()
            time.sleep(0.1)
        durable = durable_memory(client, ext, args.runs)
        tuned = None
        if args.tuned_stream_node_max_bytes:
            # Redis >= 6.2 preallocates a stream's first node to
            # min(4096, stream-node-max-bytes): most of a short journal's cost.
            setting = "stream-node-max-bytes"
            original = client.config_get(setting)[setting]
            client.config_set(setting, args.tuned_stream_node_max_bytes)
            try:
                bench.log(f"(a) again with {setting} {args.tuned_stream_node_max_bytes}")
                tuned = durable_memory(client, ext, args.runs)
            finally:
                client.config_set(setting, original)
        plain = plain_memory(client, args.runs)
    report = {
        "durable": asdict(durable),
        "plain": asdict(plain),
        "durable_over_plain": bench.ratio(
            durable.used_memory_delta_per_run, plain.used_memory_delta_per_task
        ),
    }
    if tuned is not None:
        report["tuned"] = {
            "stream_node_max_bytes": args.tuned_stream_node_max_bytes,
            "durable": asdict(tuned),
            "durable_over_plain": bench.ratio(
                tuned.used_memory_delta_per_run, plain.used_memory_delta_per_task
            ),
        }
    return report


# -- (b) the poller --------------------------------------------------------------------


def population_extension(url: str, population: int) -> DurableExtension:
    """celery_durable on an app of its own whose timers live under their own key prefix.

    Configured like `timer_app.app` (broker, result backend, journal on `url`),
    so that its poller dispatches exactly as a worker's does.
    """
    app = celery.Celery(f"population_{population}", set_as_current=False)
    app.conf.update(
        broker_url=url,
        result_backend=url,
        durable_redis_url=url,
        durable_key_prefix=f"bench{population}",
        broker_connection_retry_on_startup=True,
    )
    return celery_durable.install(app)


def make_due(client: redis.Redis, ext: DurableExtension, count: int) -> None:
    now = ext.clock.now()
    schedule_directly(
        client, ext, {r: now - 1 - i * 1e-6 for i, r in enumerate(fake_run_ids(count))}
    )


def resume_loop(client: redis.Redis, ext: DurableExtension, due: int) -> float:
    """Seconds for `poll_once()` calls to wake `due` runs due now (until one wakes none)."""
    make_due(client, ext, due)
    poller = TimerPoller(ext, 0.2)
    began = time.perf_counter()
    woken = 0
    while True:
        n, _next_due = poller.poll_once()
        woken += n
        if n == 0:
            break
    seconds = time.perf_counter() - began
    client.delete(QUEUE)  # the run tasks no worker will read
    if woken != due:
        raise RuntimeError(f"{due} timers were due but poll_once() woke {woken}")
    return seconds


def resume_parts(
    client: redis.Redis, ext: DurableExtension, due: int
) -> tuple[float, float, float]:
    """poll_once()'s work done by hand: seconds in claim, dispatch and release."""
    make_due(client, ext, due)
    timers = ext.timers
    claim = dispatch = release = 0.0
    while True:
        t0 = time.perf_counter()
        claimed, _next_due = timers.claim(ext.clock.now(), lease=LEASE, limit=BATCH)
        t1 = time.perf_counter()
        for timer in claimed:
            ext.dispatch(timer.run_id)
        t2 = time.perf_counter()
        timers.release(claimed)
        t3 = time.perf_counter()
        claim, dispatch, release = claim + t1 - t0, dispatch + t2 - t1, release + t3 - t2
        if not claimed:
            break
    client.delete(QUEUE)
    return claim, dispatch, release


def plain_sends(client: redis.Redis, count: int, **options: Any) -> float:
    """Seconds for `count` calls of `app.send_task` of a plain task."""
    app = timer_app.app
    began = time.perf_counter()
    for i in range(count):
        app.send_task("timer_bench.noop", args=(i,), **options)
    seconds = time.perf_counter() - began
    client.delete(QUEUE)
    return seconds


@dataclass(frozen=True)
class ResumeCost:
    among_future_timers: int
    resumes: int
    us_per_resume: float  # the poll_once() loop / resumes, median of rounds


@dataclass(frozen=True)
class EmptyPoll:
    future_timers: int
    us_p50: float
    us_p99: float
    us_mean: float
    server_us_per_claim: float | None


def timed_polls(poller: TimerPoller, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter_ns()
        woken, _next_due = poller.poll_once()
        samples.append((time.perf_counter_ns() - began) / 1000)
        if woken:
            raise RuntimeError(f"an empty poll woke {woken} runs")
    return samples


def server_us_per_claim(client: redis.Redis, poller: TimerPoller, count: int) -> float | None:
    """Redis' own time per claim script call (INFO commandstats), without the round trip."""
    client.config_resetstat()
    timed_polls(poller, count)
    stats = client.info("commandstats")
    claim_stats = stats.get("cmdstat_evalsha") or stats.get("cmdstat_eval")
    return float(claim_stats["usec_per_call"]) if claim_stats else None


def ping_us(client: redis.Redis) -> float:
    samples = []
    for _ in range(EMPTY_POLLS):
        began = time.perf_counter_ns()
        client.ping()
        samples.append((time.perf_counter_ns() - began) / 1000)
    return bench.percentile(samples, 50)


def part_b(url: str, client: redis.Redis, ext: DurableExtension, args: argparse.Namespace) -> dict:
    client.flushdb()  # the worker is gone: nobody else polls or consumes
    # One timer set per population, each under its own key prefix, so that
    # polls of every size can be interleaved and share whatever noise the
    # machine has.
    exts = {p: (ext if p == 0 else population_extension(url, p)) for p in args.populations}
    now = ext.clock.now()
    for population, pop_ext in exts.items():
        if population:
            bench.log(f"(b) scheduling {population} timers due in a day")
            rng = random.Random(population)
            schedule_directly(
                client,
                pop_ext,
                {r: now + DAY + rng.random() * DAY for r in fake_run_ids(population)},
            )
        if pop_ext.timers.pending() != population:
            raise RuntimeError(f"{pop_ext.timers.pending()} timers, not {population}")
    largest = max(exts)
    bench.log("(b) warm-up")
    for pop_ext in exts.values():
        resume_loop(client, pop_ext, BATCH)
        timed_polls(TimerPoller(pop_ext, 0.2), 100)
    plain_sends(client, 100)
    plain_sends(client, 100, ignore_result=True)

    bench.log(f"(b) {ROUNDS} rounds of {args.due} resumes, among 0 and {largest} future timers")
    among_none, among_largest, parts, sends, sends_ignoring = [], [], [], [], []
    for _ in range(ROUNDS):  # interleaved: each round measures every variant once
        among_none.append(resume_loop(client, ext, args.due))
        if largest:
            among_largest.append(resume_loop(client, exts[largest], args.due))
        parts.append(resume_parts(client, ext, args.due))
        sends.append(plain_sends(client, args.due))
        sends_ignoring.append(plain_sends(client, args.due, ignore_result=True))

    def us(seconds: list[float]) -> float:
        return statistics.median(seconds) / args.due * 1e6

    resumes = [ResumeCost(0, args.due, us(among_none))]
    if largest:
        resumes.append(ResumeCost(largest, args.due, us(among_largest)))
    send_us = us(sends)

    bench.log(f"(b) {EMPTY_POLLS} empty polls per population {args.populations}, interleaved")
    pollers = {p: TimerPoller(e, 0.2) for p, e in exts.items()}
    samples: dict[int, list[float]] = {p: [] for p in exts}
    blocks = 20
    for _ in range(blocks):
        for population, poller in pollers.items():
            samples[population] += timed_polls(poller, EMPTY_POLLS // blocks)
    empty = [
        EmptyPoll(
            future_timers=population,
            us_p50=bench.percentile(samples[population], 50),
            us_p99=bench.percentile(samples[population], 99),
            us_mean=statistics.fmean(samples[population]),
            server_us_per_claim=server_us_per_claim(client, pollers[population], 500),
        )
        for population in exts
    ]
    return {
        "ping_us_p50": ping_us(client),
        "plain_send_task_us": send_us,
        "plain_send_task_ignore_result_us": us(sends_ignoring),
        "resume": [asdict(r) for r in resumes],
        "resume_parts_us": {
            name: us([p[i] for p in parts])
            for i, name in enumerate(("claim", "dispatch", "release"))
        },
        "resume_over_plain_send": [r.us_per_resume / send_us for r in resumes],
        "resume_over_plain_send_ignore_result": [
            r.us_per_resume / us(sends_ignoring) for r in resumes
        ],
        "empty_poll": [asdict(e) for e in empty],
    }


# -- reporting ---------------------------------------------------------------------------


def print_table(report: bench.Report) -> None:
    print("(a) with a worker; (b) the poller in this process\n")
    a = report["memory"]
    d, p = a["durable"], a["plain"]
    print(
        f"(a) memory: {d['runs']} runs sleeping 1 day (all suspended after "
        f"{d['seconds_to_suspend_all']:.1f}s), {d['events_per_run']:.0f} events each"
    )
    print(f"  used_memory growth per sleeping run   {d['used_memory_delta_per_run']:>8.0f} B")
    print("  MEMORY USAGE per run:")
    print(f"    event stream                        {d['stream_bytes']:>8.0f} B")
    print(f"    meta hash                           {d['meta_bytes']:>8.0f} B")
    print(f"    inbox                               {d['inbox_bytes']:>8.0f} B")
    print(f"    share of the timers zset            {d['timers_share_bytes']:>8.0f} B")
    print(f"    share of the runs index zset        {d['runs_index_share_bytes']:>8.0f} B")
    print(f"    total                               {d['keys_total_bytes']:>8.0f} B")
    print(
        f"  baseline: {p['tasks']} plain tasks with a 1-day countdown held by the worker "
        f"(after {p['seconds_to_hold_all']:.1f}s)"
    )
    print(f"  used_memory growth per waiting task   {p['used_memory_delta_per_task']:>8.0f} B")
    print(
        f"    (unacked hash {p['unacked_share_bytes']:.0f} B + "
        f"unacked_index {p['unacked_index_share_bytes']:.0f} B per task)"
    )
    print(f"  durable/plain                         {bench.times(a['durable_over_plain']):>9}")
    tuned = a.get("tuned")
    if tuned:
        t = tuned["durable"]
        print(
            f"  with Redis stream-node-max-bytes {tuned['stream_node_max_bytes']} "
            f"(another {t['runs']} sleeping runs):"
        )
        print(f"    used_memory growth per sleeping run {t['used_memory_delta_per_run']:>8.0f} B")
        print(f"    MEMORY USAGE of its event stream    {t['stream_bytes']:>8.0f} B")
        print(
            f"    durable/plain                       {bench.times(tuned['durable_over_plain']):>9}"
        )
    print()

    b = report["poller"]
    parts = b["resume_parts_us"]
    print(f"(b) poller, in-process (PING round trip p50 {b['ping_us_p50']:.0f} µs)")
    print(
        f"  baseline: plain app.send_task              {b['plain_send_task_us']:>6.0f} µs per task"
    )
    print(
        f"    (with ignore_result=True                 "
        f"{b['plain_send_task_ignore_result_us']:>6.0f} µs)"
    )
    for row, ratio, ratio_ignoring in zip(
        b["resume"],
        b["resume_over_plain_send"],
        b["resume_over_plain_send_ignore_result"],
        strict=True,
    ):
        print(
            f"  per resumed run, among {row['among_future_timers']:>6} future timers "
            f"{row['us_per_resume']:>6.0f} µs  = {ratio:.2f}x send_task "
            f"({ratio_ignoring:.2f}x with ignore_result)"
        )
    print(
        f"    of which claim {parts['claim']:.0f} + dispatch {parts['dispatch']:.0f} "
        f"+ release {parts['release']:.0f} µs (measured apart, among 0)"
    )
    print("  empty poll (nothing due), µs:")
    print(f"    {'future timers':>13}{'p50':>9}{'p99':>9}{'mean':>9}{'server':>9}{'vs 0':>8}")
    first = b["empty_poll"][0]["us_p50"] if b["empty_poll"] else None
    for row in b["empty_poll"]:
        server = row["server_us_per_claim"]
        print(
            f"    {row['future_timers']:>13}{row['us_p50']:>9.0f}{row['us_p99']:>9.0f}"
            f"{row['us_mean']:>9.0f}{'' if server is None else f'{server:.1f}':>9}"
            f"{row['us_p50'] / first if first else 0:>7.2f}x"
        )


def run(url: str, args: argparse.Namespace) -> bench.Report:
    timer_app.use_redis(url)
    ext = extension_for(timer_app.app)
    with redis.Redis.from_url(url) as client:
        return {
            "memory": part_a(url, client, ext, args),
            "poller": part_b(url, client, ext, args),
        }


QUICK = {"runs": 300, "due": 100, "populations": [0, 1000]}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", type=bench.at_least(1), default=10_000, help="sleeping runs for (a)"
    )
    parser.add_argument(
        "--due", type=bench.at_least(1), default=1000, help="timers due per round for (b)"
    )
    parser.add_argument(
        "--populations",
        type=lambda text: [int(p) for p in text.split(",")],
        default=[0, 1000, 10_000, 100_000],
        help="future-timer counts for the empty polls, ascending (0,1000,10000,100000)",
    )
    parser.add_argument(
        "--tuned-stream-node-max-bytes",
        type=int,
        default=1024,
        help="also measure (a) with this Redis stream-node-max-bytes (0: skip)",
    )


def check(args: argparse.Namespace) -> str | None:
    if args.populations != sorted(args.populations):
        return "--populations must ascend"
    return None


if __name__ == "__main__":
    bench.main(__name__)
