"""Evaluating rules where activities happen, and queueing what they should do.

`rule_engine(ext)` is an app's rules, loaded once per process. In a worker
the engine listens to the extension (see `worker/rules.py`): `on_emit`
runs in the process where the activity happened (a pool child for a failed
task, the main process for an orphaned task). It checks each rule of that
type against its conditions (no Redis access unless a condition needs it)
and, for a match, passes the rule's circuit breaker and adds one job to the
Redis action queue. Actions never run here: a worker's action runner takes
the job, so an HTTP call never delays a task, and an accepted job survives
the death of the worker that queued it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis

from .. import signals
from ..activity import Activity, Complete, Listener
from ..plugins import plugin_manager
from .action_queue import ActionQueue
from .breaker import Breakers, BreakerState
from .context import RuleContext
from .history import SKIPPED, RuleHistory
from .loader import load_rules
from .model import Rule
from .registry import PartRegistry
from .ruleset import RuleSet, build_rule_set, redact_spec
from .store import RuleStore

if TYPE_CHECKING:
    import pluggy

    from ..extension import DurableExtension

logger = logging.getLogger("celery_durable.rules")

SWITCH_CACHE_SECONDS = 1.0
# How often a process looks whether the stored rules changed: a change reaches
# every process of every worker within about this long (see `refresh`).
CHECK_SECONDS = 0.5
SWITCH_VALUES = {b"on": True, b"off": False}


def rule_engine(ext: DurableExtension) -> RuleEngine:
    """The rules of `ext`'s app, loaded on first use; bad rules raise RulesError."""
    return ext.component(RuleEngine)


class RuleEngine(Listener):
    def __init__(self, ext: DurableExtension):
        self.ext = ext
        settings = ext.settings
        self.pm: pluggy.PluginManager = plugin_manager(ext)
        self.registry = PartRegistry.collect(self.pm)
        # Bad rules in the configuration: RulesError, and the worker does not start.
        self.config_rules: list[Rule] = load_rules(settings.rules, self.registry)
        self.store = RuleStore(
            ext.redis, ext.keys, redact=lambda spec: redact_spec(spec, self.registry)
        )
        # The configuration's rules until the stored ones are read (version -1:
        # the next refresh reads them, whatever the stored version is).
        self.current: RuleSet = build_rule_set(self.config_rules, {}, self.registry, -1)
        self._checked_at = float("-inf")
        self._loading = threading.Lock()
        self._pid = os.getpid()
        # Something listens to every activity: a plugin's durable_event (see plugins.EventHook).
        self.event_hook_used = bool(self.pm.hook.durable_event.get_hookimpls())
        self.breakers = Breakers(ext.redis, ext.keys)
        self.actions = ActionQueue(ext.redis, ext.keys)
        self.history = RuleHistory(
            ext.redis,
            ext.keys,
            settings.rule_history_maxlen,
            text_limit=settings.max_text_bytes,
            retention=settings.retention,
            redact_args=settings.redact_args,
        )
        self._switches: dict[str, tuple[float, bool | None]] = {}

    # -- the current rule set ------------------------------------------------------

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.current.rules

    @property
    def by_name(self) -> Mapping[str, Rule]:
        return self.current.by_name

    @property
    def by_event(self) -> Mapping[str, tuple[Rule, ...]]:
        return self.current.by_event

    def refresh(self, *, force: bool = False) -> RuleSet:
        """The current rule set, reloaded first if the stored rules changed.

        Looks at the stored version at most once per `CHECK_SECONDS` in this
        process (one GET), unless `force`: every process of a worker, pool
        children too, so reaches a change within that time of its next
        evaluation. The new set is built whole, then swapped in. Redis away:
        the rules loaded last stay.
        """
        now = time.monotonic()
        if not force and now - self._checked_at < CHECK_SECONDS:
            return self.current
        if self._pid != os.getpid():  # a forked pool child: a lock held at the fork stays held
            self._loading, self._pid = threading.Lock(), os.getpid()
        if not self._loading.acquire(blocking=force):
            return self.current  # another thread of this process is loading it
        try:
            self._checked_at = now
            try:
                if self.store.version() == self.current.version:
                    return self.current
                version, stored = self.store.read()
            except redis.RedisError as exc:
                logger.warning(
                    "could not read the stored rules (%r); keeping version %d",
                    exc,
                    self.current.version,
                )
                return self.current
            if version != self.current.version:
                loaded = build_rule_set(self.config_rules, stored, self.registry, version)
                for problem in loaded.problems:
                    logger.error("stored rule not loaded here (the others run): %s", problem)
                self.current = loaded
            return self.current
        finally:
            self._loading.release()

    # -- evaluation ------------------------------------------------------------------

    def on_emit(self, activity: Activity, complete: Complete | None = None) -> list[str]:
        """Evaluate the rules for `activity`; return the ids of the executions queued.

        `complete(activity.data)` runs once, before the first rule fires: the
        costly part of an activity is built only when a rule acts on it.
        """
        current = self.refresh()  # one rule set for the whole evaluation
        rules: Sequence[Rule] = current.by_event.get(activity.type, ())
        polled_by = activity.data.get("polled_by")
        if polled_by:  # a polling trigger's activity is for the rule that polled
            rules = [r for r in rules if r.name == polled_by]
        candidates = [r for r in rules if r.trigger.matches(activity)]
        if not candidates:
            return []
        context = RuleContext(self.ext)
        queued = []
        for rule in candidates:
            try:
                if not self.is_enabled(rule):
                    continue
                ctx = context.for_rule(rule.name)
                # Cheap conditions first: one that needs Redis runs only if they hold.
                conditions = sorted(rule.conditions, key=lambda c: c.cost)
                if all(c.matches(activity, ctx) for c in conditions):
                    if complete is not None:
                        complete(activity.data)
                        complete = None
                    queued.append(self.fire(rule, activity, context, current.version))
            except Exception:
                logger.exception("rule %r failed on %s; others go on", rule.name, activity.type)
        return [q for q in queued if q]

    def fire(self, rule: Rule, event: Activity, context: RuleContext, version: int) -> str:
        """Queue the rule's actions for `event` (or skip them, its breaker open).

        The job names the rule set's `version` it was fired under: a runner
        whose rules are older reloads them first, so it never runs the
        actions of an older definition than the one that matched.
        """
        execution_id = uuid.uuid4().hex
        breaker = self.breakers.pass_through(rule)
        conditions = self.explain(rule, event, context)
        job = {
            "execution_id": execution_id,
            "rule": rule.name,
            "event": event.as_dict(),
            "conditions": conditions,
            "breaker": breaker.as_dict(),
            "queued_at": time.time(),
            "version": version,
        }
        if not breaker.closed:
            self._breaker_open(rule, breaker, job)
            return ""
        self.actions.enqueue(job)
        signals.send(signals.rule_fired, rule.name, event=event, execution_id=execution_id)
        return execution_id

    def explain(self, rule: Rule, event: Activity, context: RuleContext) -> list[dict[str, Any]]:
        ctx = context.for_rule(rule.name)
        return [
            {
                "condition": c.name,
                "value": c.value,
                "holds": c.matches(event, ctx),
                "why": c.explain(event, ctx),
            }
            for c in rule.conditions
        ]

    def is_enabled(self, rule: Rule) -> bool:
        """The rule's run-time switch when one is stored, else its `enabled:`."""
        switch = self.switch(rule.name)
        return rule.enabled if switch is None else switch

    def switch(self, rule_name: str, *, fresh: bool = False) -> bool | None:
        """The stored switch (True: on, False: off), None when there is none.

        Read from Redis at most once a second per rule and process, so a
        switch reaches every worker within a second at no cost per event.
        """
        cached = self._switches.get(rule_name)
        now = time.monotonic()
        if fresh or cached is None or now - cached[0] > SWITCH_CACHE_SECONDS:
            raw = self.ext.redis.get(self.ext.keys.rule_switch(rule_name))
            cached = (now, SWITCH_VALUES.get(raw or b""))
            self._switches[rule_name] = cached
        return cached[1]

    def set_switch(self, rule_name: str, enabled: bool | None) -> None:
        """Switch the rule on or off in every worker; None clears the switch."""
        key = self.ext.keys.rule_switch(rule_name)
        if enabled is None:
            self.ext.redis.delete(key)
        else:
            self.ext.redis.set(key, "on" if enabled else "off")
        self._switches.pop(rule_name, None)

    def wants(self, kind: str) -> bool:
        """Would an activity of this type do anything here (a rule, a plugin hook)?"""
        return bool(self.refresh().by_event.get(kind)) or self.event_hook_used

    def count_failure(self, event: Activity) -> int:
        """Record a failure of this task name; how many there were in the window."""
        window = self.ext.settings.failure_window
        key = self.ext.keys.task_failures(str(event.data.get("task_name")))
        pipe = self.ext.redis.pipeline(transaction=True)
        pipe.zadd(key, {str(event.data.get("task_id") or uuid.uuid4().hex): event.ts})
        pipe.zremrangebyscore(key, "-inf", event.ts - window)
        pipe.zcard(key)
        pipe.expire(key, int(window) + 60)
        return int(pipe.execute()[2])

    def _breaker_open(self, rule: Rule, breaker: BreakerState, job: dict[str, Any]) -> None:
        """Record the skipped actions; the breaker's own notice is queued as `job`."""
        entry = {
            "execution_id": job["execution_id"],
            "ts": job["queued_at"],
            "event": job["event"],
            "conditions": job["conditions"],
            "breaker": job["breaker"],
            "actions": [],
            "outcome": SKIPPED,
            "reason": "circuit breaker open",
        }
        if breaker.just_opened:
            logger.warning(
                "circuit breaker of rule %r opened: %d executions in %gs; "
                "its actions are skipped until %s",
                rule.name,
                breaker.executions,
                breaker.window_seconds,
                breaker.closes_at,
            )
            signals.send(
                signals.breaker_opened,
                rule.name,
                executions=breaker.executions,
                window_seconds=breaker.window_seconds,
                closes_at=breaker.closes_at,
            )
            if rule.breaker.notify is not None:
                self.actions.enqueue({**job, "notify_breaker": True})
                return
        self.history.record(rule.name, entry)
