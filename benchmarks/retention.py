"""What finished runs leave in Redis, with and without `durable_retention`.

For each retention (`none`, and `--retention` seconds, 2 by default) on a
private redis-server (unless `--redis-url` names a scratch one: it is
flushed) with a real `celery worker --pool prefork --concurrency 2` of
`benchmarks.retention_app`: `--runs` three-step runs are started and awaited
until all are completed, then, for the short retention, until their keys are
gone and the runs index is empty. Reported at each point: DBSIZE, the keys
under the `durable:` prefix, and `INFO memory` used_memory.

    python benchmarks/retention.py [--runs 2000] [--retention 2] [--json]
                                   [--redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/retention.py` from anywhere

import redis  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    Deadline,
    celery_worker,
    environment,
    exit_on_sigterm,
    log,
    redis_url,
)

PREFIX = "durable"


@dataclass(frozen=True)
class Point:
    dbsize: int
    durable_keys: int
    used_memory: int


@dataclass(frozen=True)
class Measured:
    retention: str
    runs: int
    before: Point
    finished: Point  # right after the last run completed
    after: Point  # after the retention and a sweep (same as finished when kept forever)
    seconds_to_finish: float
    seconds_to_forget: float | None


def point(client: redis.Redis) -> Point:
    time.sleep(0.5)  # let lazy frees and client buffers settle
    durable = sum(1 for _ in client.scan_iter(match=f"{PREFIX}:*", count=1000))
    return Point(client.dbsize(), durable, int(client.info("memory")["used_memory"]))


def wait_completed(client: redis.Redis, run_ids: list[str], deadline: Deadline) -> None:
    from benchmarks.retention_app import app
    from celery_durable.extension import extension_for

    keys = extension_for(app).keys
    left = list(run_ids)
    while left:
        pipe = client.pipeline(transaction=False)
        for run_id in left:
            pipe.hget(keys.run_meta(run_id), "status")
        statuses = pipe.execute()
        if b"failed" in statuses:
            raise RuntimeError("a run failed: see the worker")
        # A missing meta (None) is a run already expired: completed before.
        left = [r for r, s in zip(left, statuses, strict=True) if s not in (b"completed", None)]
        if left and deadline.remaining():
            time.sleep(0.2)


def measure(url: str, retention: str, runs: int) -> Measured:
    client = redis.Redis.from_url(url)
    client.flushdb()
    os.environ["CELERY_DURABLE_BENCH_REDIS_URL"] = url
    os.environ["CELERY_DURABLE_BENCH_RETENTION"] = retention
    from benchmarks import retention_app

    retention_app.configure(url, retention)
    from celery_durable import start
    from celery_durable.extension import extension_for

    ext = extension_for(retention_app.app)
    env = {"CELERY_DURABLE_BENCH_RETENTION": retention}
    with celery_worker(
        "benchmarks.retention_app",
        url,
        url_env="CELERY_DURABLE_BENCH_REDIS_URL",
        ping=retention_app.ping,
        extra_env=env,
    ):
        before = point(client)
        began = time.monotonic()
        run_ids = [start(retention_app.three_steps, n).id for n in range(runs)]
        wait_completed(client, run_ids, Deadline(300, f"{runs} runs to complete"))
        seconds = time.monotonic() - began
        finished = point(client)
        log(f"retention {retention}: {runs} runs completed in {seconds:.1f}s")
        forget = None
        after = finished
        if retention != "none":
            began = time.monotonic()
            deadline = Deadline(float(retention) + 60, "finished runs to be forgotten")
            while client.zcard(ext.keys.runs_index()) or next(
                client.scan_iter(match=f"{PREFIX}:run:*", count=1000), None
            ):
                deadline.remaining()
                time.sleep(0.1)
            forget = time.monotonic() - began
            after = point(client)
    client.close()
    return Measured(retention, runs, before, finished, after, seconds, forget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--retention", default="2", help="seconds (the short retention)")
    parser.add_argument("--redis-url")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()
    with redis_url(args.redis_url) as url:
        results = [measure(url, r, args.runs) for r in ("none", args.retention)]
        env = environment(url, 2)
    if args.json:
        print(json.dumps({"environment": env, "results": [asdict(r) for r in results]}, indent=2))
        return
    print(f"{args.runs} finished three-step runs; {env}")
    print(f"{'retention':>10}  {'':>9}  {'DBSIZE':>7}  {'durable:*':>9}  {'used_memory':>12}")
    for r in results:
        for name, p in (("before", r.before), ("finished", r.finished), ("after", r.after)):
            print(
                f"{r.retention:>10}  {name:>9}  {p.dbsize:>7,}  {p.durable_keys:>9,}  "
                f"{p.used_memory:>12,}"
            )
        grown = r.after.used_memory - r.before.used_memory
        print(
            f"{'':>10}  kept {grown / r.runs:,.0f} bytes and "
            f"{(r.after.dbsize - r.before.dbsize) / r.runs:.2f} keys per run"
            + (
                f"; forgotten {r.seconds_to_forget:.1f}s after the last ended"
                if r.seconds_to_forget is not None
                else ""
            )
        )


if __name__ == "__main__":
    main()
