"""The rules in a worker: evaluated where activities happen, acted on by one thread.

`activate_rules(ext)` is called by the worker bootstep before the pool
forks: bad rules stop the worker before it takes a task, and the pool's
children inherit the loaded rules. From then on the rule engine listens to
the extension, so each activity is evaluated in the process where it
happens (a pool child for a failed task, the main process for recovery and
polling), and a match queues an action job.

Rules change while the worker runs (`save_rules`, `rules add`, enable and
disable): every process of the worker, pool children included, looks at
the stored rule set's version at most every half second when it evaluates
(`RuleEngine.refresh`) and swaps in the new set whole; the main process
looks every round of its action runner, and reports the stored rules it
cannot load (a plugin it lacks) for `rules list`.

The `ActionRunner`, a thread of the worker's main process, works that
queue (`run_job`) and, between jobs, does the rules' periodic chores:
`ExecutionTimeWatch` reports tasks running past a rule's threshold, and
`TriggerPolling` polls the triggers that poll.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .. import signals
from ..activity import TASK_EXECUTION_TIME_EXCEEDED, Activity
from ..background import Background
from ..default_plugins.triggers import TaskExecutionTimeExceeded
from ..errors import ActionSkipped
from ..extension import RUN_TASK_NAME, DurableExtension
from ..rules.action_queue import ActionQueue
from ..rules.base import Action
from ..rules.context import RuleContext
from ..rules.engine import RuleEngine, rule_engine
from ..rules.history import FAILURE, SKIPPED, SUCCESS
from ..rules.model import Rule
from .holdings import held_requests
from .task_events import overrun_data

logger = logging.getLogger("celery_durable.rules")

# A consumer of the action queue's group (one per worker hostname) with
# nothing pending and idle this long belongs to a worker that is gone.
CONSUMER_IDLE_SECONDS = 86400.0
FORGET_EVERY = 600.0
RETRY_AFTER = 1.0  # seconds after a round that failed (Redis away)


def activate_rules(ext: DurableExtension) -> RuleEngine:
    """Load the app's rules now, and evaluate them in this process from now on."""
    engine = rule_engine(ext)  # bad rules: RulesError, and the worker does not start
    ext.listen(engine)  # once per app, however many workers it starts here
    return engine


class ActionRunner(Background):
    """A thread in each worker's main process: works the action queue.

    Between jobs it also does the rules' periodic chores: checking the
    execution time of running tasks, and polling triggers that poll. A
    round waits for jobs in Redis (half a second at most), not in the thread.
    """

    def __init__(self, ext: DurableExtension, consumer: str):
        super().__init__("action runner", RETRY_AFTER)
        self.ext = ext
        self.engine = rule_engine(ext)
        self.queue = ActionQueue(ext.redis, ext.keys)
        self.consumer = consumer
        self.watch = ExecutionTimeWatch(ext, consumer)
        self.polling = TriggerPolling(ext)
        self._forget_at = time.monotonic() + FORGET_EVERY
        self._reported_version: int | None = None

    def run_once(self) -> float:
        self.follow_rules()
        self.watch.check()
        self.polling.check()
        if time.monotonic() >= self._forget_at:
            self._forget_at = time.monotonic() + FORGET_EVERY
            self.queue.forget_consumers(idle_seconds=CONSUMER_IDLE_SECONDS)
        self.work_once()
        return 0.0  # work_once waited for jobs already

    def follow_rules(self) -> None:
        """Reload the rules if the stored ones changed; report those that do not load here.

        Every round (at most half a second apart), so this process's periodic
        chores and action jobs use the current rules. The problems go to Redis
        under this worker's name, for `rules list`; the other rules run.
        """
        current = self.engine.refresh()
        if current.version == self._reported_version or current.version < 0:
            return
        key, field = self.ext.keys.rule_load_problems(), self.consumer
        members: Any = self.ext.redis.zrange(self.ext.keys.workers(), 0, -1)
        reported: Any = self.ext.redis.hkeys(key)
        live = {w.decode() for w in members} | {field}
        gone = [w for w in reported if w.decode() not in live]
        if gone:  # reports of workers that died: nobody else removes them
            self.ext.redis.hdel(key, *gone)
        if current.problems:
            report = {
                "version": current.version,
                "ts": time.time(),
                "problems": [p.as_dict() for p in current.problems],
            }
            self.ext.redis.hset(key, field, json.dumps(report))
        else:
            self.ext.redis.hdel(key, field)
        self._reported_version = current.version
        logger.info("rules: version %d, %d rule(s) loaded", current.version, len(current.rules))

    def on_stopped(self) -> None:
        try:
            self.ext.redis.hdel(self.ext.keys.rule_load_problems(), self.consumer)
        except Exception as exc:
            logger.info("could not remove the rule problems of %s: %r", self.consumer, exc)
        try:  # a clean stop: this worker's consumer entry goes, unless it holds jobs
            self.queue.forget_consumers(idle_seconds=0, only=self.consumer)
        except Exception as exc:
            logger.info("could not remove action consumer %s: %r", self.consumer, exc)

    def work_once(self, *, block_ms: int = 500) -> int:
        claim_after = self.ext.settings.action_claim_after
        jobs = self.queue.reclaim(self.consumer, claim_after) + self.queue.take(
            self.consumer, block_ms=block_ms
        )
        for entry_id, job in jobs:
            if self.stopping.is_set():
                break  # unacknowledged: another worker claims it later
            try:
                run_job(self.engine, job)
            except Exception:
                logger.exception("action job %s failed; it stays queued", entry_id)
                continue
            self.queue.done(entry_id)
        return len(jobs)


def run_job(engine: RuleEngine, job: dict[str, Any]) -> dict[str, Any]:
    """Run a job's actions in order; return the history entry written for it."""
    began = time.time()
    event = Activity(
        type=job["event"]["type"],
        data=job["event"].get("data") or {},
        ts=job["event"].get("ts", began),
    )
    current = engine.refresh()
    if current.version < job.get("version", -1) or job["rule"] not in current.by_name:
        # Fired under a newer rule set than this process has: load it first,
        # so the actions run are those of the definition that matched, or a later one.
        current = engine.refresh(force=True)
    rule = current.by_name.get(job["rule"])
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
            reason=f"rule {job['rule']!r} is no longer loaded on {engine.ext.app.main}",
        )
        engine.history.record(job["rule"], entry)
        return entry
    if job.get("notify_breaker"):
        actions, entry["reason"] = [rule.breaker.notify], "circuit breaker opened"
    else:
        actions = list(rule.actions)
    context = RuleContext(engine.ext, rule.name, job["execution_id"])
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


def _run_action(action: Action, event: Activity, context: RuleContext) -> dict[str, Any]:
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


class ExecutionTimeWatch:
    """Reports each running task once per threshold it has run past."""

    def __init__(self, ext: DurableExtension, hostname: str):
        self.ext = ext
        self.hostname = hostname
        self.engine = rule_engine(ext)
        self._version: int | None = None
        self.thresholds: list[float] = []
        self._reported: set[tuple[str, float]] = set()

    def _follow(self) -> None:
        """The thresholds of the current rules (recomputed when they change)."""
        current = self.engine.current
        if current.version != self._version:
            self._version = current.version
            self.thresholds = sorted(
                {
                    rule.trigger.threshold_seconds
                    for rule in current.rules
                    if isinstance(rule.trigger, TaskExecutionTimeExceeded)
                }
            )

    def check(self) -> int:
        self._follow()
        if not self.thresholds:
            return 0
        now = time.time()
        running = {}
        for request in held_requests():
            if request.time_start and request.name != RUN_TASK_NAME:
                running[request.id] = request
        self._reported = {(tid, th) for tid, th in self._reported if tid in running}
        emitted = 0
        for request in running.values():
            runtime = now - request.time_start
            for threshold in self.thresholds:
                if runtime >= threshold and (request.id, threshold) not in self._reported:
                    self._reported.add((request.id, threshold))
                    self.ext.emit(
                        TASK_EXECUTION_TIME_EXCEEDED,
                        overrun_data(request, self.hostname, runtime, threshold),
                    )
                    emitted += 1
        return emitted


class TriggerPolling:
    """Polls the triggers that poll: each rule's, by one worker at a time.

    Every rule with a polling trigger is polled on its own (its own
    parameters, its own interval, its own lock), and the activities a poll
    yields carry the rule's name in `polled_by`, so they are evaluated by
    that rule only.
    """

    def __init__(self, ext: DurableExtension):
        self.ext = ext
        self.engine = rule_engine(ext)
        self._next: dict[str, float] = {}

    @property
    def rules(self) -> list[Rule]:
        """The rules of the current set whose trigger polls."""
        return [r for r in self.engine.current.rules if r.trigger.poll_interval]

    def check(self) -> int:
        emitted = 0
        now = time.monotonic()
        for rule in self.rules:
            if now < self._next.get(rule.name, 0.0) or not self.engine.is_enabled(rule):
                continue
            interval = float(rule.trigger.poll_interval or 0)
            self._next[rule.name] = now + interval
            lock = self.ext.keys.poll_lock(rule.name)
            if not self.ext.redis.set(lock, "1", nx=True, px=max(1, int(interval * 1000))):
                continue  # another worker polls this rule this interval
            try:
                for data in rule.trigger.poll(RuleContext(self.ext, rule.name)):
                    self.ext.emit(rule.event, {**dict(data), "polled_by": rule.name})
                    emitted += 1
            except Exception:
                logger.exception("the trigger of rule %r failed to poll", rule.name)
        return emitted
