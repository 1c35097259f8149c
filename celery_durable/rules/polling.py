"""Triggers that poll: one worker at a time calls `poll()` every interval."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .base import Trigger
from .context import RuleContext

if TYPE_CHECKING:
    from ..extension import DurableExtension

logger = logging.getLogger("celery_durable.rules")


class TriggerPolling:
    def __init__(self, ext: DurableExtension):
        self.ext = ext
        triggers: dict[str, Trigger] = {}
        for rule in ext.rules.rules:
            if rule.trigger.poll_interval and rule.event not in triggers:
                triggers[rule.event] = rule.trigger
        self.triggers = triggers
        self._next: dict[str, float] = {}

    def check(self) -> int:
        emitted = 0
        now = time.monotonic()
        for name, trigger in self.triggers.items():
            if now < self._next.get(name, 0.0):
                continue
            interval = float(trigger.poll_interval or 0)
            self._next[name] = now + interval
            lock = self.ext.keys.poll_lock(name)
            if not self.ext.redis.set(lock, "1", nx=True, px=max(1, int(interval * 1000))):
                continue  # another worker polls this interval
            try:
                for data in trigger.poll(RuleContext(self.ext)):
                    self.ext.emit(name, dict(data))
                    emitted += 1
            except Exception:
                logger.exception("trigger %s failed to poll", name)
        return emitted
