"""The Redis-backed queue of accepted action jobs, and the runner that works it.

A job is one matched evaluation of a rule: its actions run in order, by one
worker's runner thread (main process), outside any task. Jobs sit in a Redis
stream read through a consumer group; a job is acknowledged and deleted only
after its history entry is written, and a job whose worker died before that
is claimed by another worker after `durable_action_claim_after` seconds. So
an accepted action is not lost; it may run twice if a worker dies mid-job.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from .. import signals
from ..activity import Activity
from ..codec import packb_lenient, unpackb
from ..errors import ActionSkipped
from ..keys import Keys
from .context import RuleContext
from .history import FAILURE, SKIPPED, SUCCESS

if TYPE_CHECKING:
    from ..extension import DurableExtension

logger = logging.getLogger("celery_durable.actions")

GROUP = "durable-actions"
# A safety bound on jobs waiting (approximate trim of the oldest). The rules'
# circuit breakers keep a healthy queue to a handful; only runners stuck for
# long let it reach this, and then the oldest accepted jobs are dropped.
MAXLEN = 10_000
# A consumer of the group (one per worker hostname) with nothing pending and
# idle this long belongs to a worker that is gone: forget it.
CONSUMER_IDLE_SECONDS = 86400.0
FORGET_EVERY = 600.0


class ActionQueue:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.key = keys.actions()
        self._group_ready = False

    def enqueue(self, job: dict[str, Any]) -> None:
        self.client.xadd(self.key, {"j": packb_lenient(job)}, maxlen=MAXLEN, approximate=True)

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def take(
        self, consumer: str, *, count: int = 10, block_ms: int = 1000
    ) -> list[tuple[str, dict[str, Any]]]:
        self.ensure_group()
        found = self.client.xreadgroup(
            GROUP, consumer, {self.key: ">"}, count=count, block=block_ms
        )
        return [
            (entry_id.decode(), unpackb(fields[b"j"]))
            for _, entries in found or ()
            for entry_id, fields in entries
        ]

    def reclaim(
        self, consumer: str, min_idle_seconds: float, *, count: int = 10
    ) -> list[tuple[str, dict[str, Any]]]:
        """Jobs another worker took and never finished (it died)."""
        self.ensure_group()
        _, claimed, *_ = self.client.xautoclaim(
            self.key,
            GROUP,
            consumer,
            int(min_idle_seconds * 1000),
            start_id="0-0",
            count=count,
        )
        return [
            (entry_id.decode(), unpackb(fields[b"j"])) for entry_id, fields in claimed if fields
        ]

    def done(self, entry_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.key, GROUP, entry_id)
        pipe.xdel(self.key, entry_id)
        pipe.execute()

    def pending(self) -> int:
        return int(self.client.xlen(self.key))

    def forget_consumers(self, *, idle_seconds: float, only: str | None = None) -> int:
        """Delete the group's consumers that hold nothing and were idle that long.

        Their entries would otherwise pile up, one per worker hostname ever
        seen. A consumer with pending jobs is kept: its jobs are reclaimed.
        """
        self.ensure_group()
        forgotten = 0
        for consumer in self.client.xinfo_consumers(self.key, GROUP):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if only is not None and name != only:
                continue
            if consumer["pending"] == 0 and consumer["idle"] >= idle_seconds * 1000:
                self.client.xgroup_delconsumer(self.key, GROUP, name)
                forgotten += 1
        return forgotten


def run_job(ext: DurableExtension, job: dict[str, Any]) -> dict[str, Any]:
    """Run a job's actions in order; return the history entry written for it."""
    engine = ext.rules
    began = time.time()
    event = Activity(
        type=job["event"]["type"],
        data=job["event"].get("data") or {},
        ts=job["event"].get("ts", began),
    )
    rule = engine.by_name.get(job["rule"])
    entry: dict[str, Any] = {
        "execution_id": job["execution_id"],
        "ts": began,
        "event": job["event"],
        "conditions": job.get("conditions", []),
        "breaker": job.get("breaker", {}),
    }
    if rule is None:
        entry.update(
            actions=[],
            outcome=FAILURE,
            reason=f"rule {job['rule']!r} is no longer loaded on {ext.app.main}",
        )
        engine.history.record(job["rule"], entry)
        return entry
    if job.get("notify_breaker"):
        actions, entry["reason"] = [rule.breaker.notify], "circuit breaker opened"
    else:
        actions = list(rule.actions)
    context = RuleContext(ext, rule.name, job["execution_id"])
    results = [_run_action(action, event, context) for action in actions if action]
    if any(not r["ok"] for r in results):
        outcome = FAILURE
    elif any(r.get("skipped") for r in results):
        outcome = SKIPPED  # an action declined (a retry out of attempts): not a success
    else:
        outcome = SUCCESS
    if job.get("notify_breaker"):
        outcome = SKIPPED  # the rule's own actions did not run
    entry.update(actions=results, outcome=outcome, duration=time.time() - began)
    engine.history.record(rule.name, entry)
    return entry


def _run_action(action: Any, event: Activity, context: RuleContext) -> dict[str, Any]:
    try:
        result = action.run(event, context)
        outcome = {"type": action.name, "ok": True, "result": result}
    except ActionSkipped as exc:
        outcome = {"type": action.name, "ok": True, "skipped": True, "result": str(exc)}
    except Exception as exc:
        error = action.describe_error(exc)  # an httpx error holds the URL: redacted
        logger.warning("rule %r: action %s failed: %s", context.rule_name, action.name, error)
        outcome = {"type": action.name, "ok": False, "error": error}
    signals.send(
        signals.action_done,
        context.rule_name,
        action=action.name,
        ok=outcome["ok"],
        result=outcome.get("result", outcome.get("error")),
        execution_id=context.execution_id,
    )
    return outcome


class ActionRunner:
    """A thread in each worker's main process: works the action queue.

    Between jobs it also does the rules' periodic chores (`tick`): checking
    the execution time of running tasks, and polling triggers that poll.
    """

    def __init__(self, ext: DurableExtension, consumer: str, tick: Any = None):
        self.ext = ext
        self.consumer = consumer
        self.tick = tick
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name="celery_durable-actions", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:  # a clean stop: this worker's consumer entry goes, unless it holds jobs
            self.ext.action_queue.forget_consumers(idle_seconds=0, only=self.consumer)
        except Exception as exc:
            logger.info("could not remove action consumer %s: %r", self.consumer, exc)

    def work_once(self, *, block_ms: int = 500) -> int:
        queue = self.ext.action_queue
        claim_after = self.ext.settings.action_claim_after
        jobs = queue.reclaim(self.consumer, claim_after) + queue.take(
            self.consumer, block_ms=block_ms
        )
        for entry_id, job in jobs:
            if self._stopping.is_set():
                break  # unacknowledged: another worker claims it later
            try:
                run_job(self.ext, job)
            except Exception:
                logger.exception("action job %s failed; it stays queued", entry_id)
                continue
            queue.done(entry_id)
        return len(jobs)

    def _loop(self) -> None:
        failures = 0
        forget_at = time.monotonic() + FORGET_EVERY
        while not self._stopping.is_set():
            try:
                if self.tick is not None:
                    self.tick()
                if time.monotonic() >= forget_at:
                    forget_at = time.monotonic() + FORGET_EVERY
                    self.ext.action_queue.forget_consumers(idle_seconds=CONSUMER_IDLE_SECONDS)
                self.work_once()
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 50 == 0:
                    logger.warning("action runner: %r", exc)
                self._stopping.wait(min(5.0, 0.2 * failures))
