"""Triggers that poll: each rule's trigger is polled by one worker at a time.

Every rule with a polling trigger is polled on its own (its own parameters,
its own interval, its own lock), and the events a poll yields carry the
rule's name in `polled_by`, so they are evaluated by that rule only.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .context import RuleContext
from .model import Rule

if TYPE_CHECKING:
    from ..extension import DurableExtension

logger = logging.getLogger("celery_durable.rules")


class TriggerPolling:
    def __init__(self, ext: DurableExtension):
        self.ext = ext
        self.rules: list[Rule] = [r for r in ext.rules.rules if r.trigger.poll_interval]
        self._next: dict[str, float] = {}

    def check(self) -> int:
        emitted = 0
        now = time.monotonic()
        for rule in self.rules:
            if now < self._next.get(rule.name, 0.0) or not self.ext.rules.is_enabled(rule):
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
