"""Per-rule circuit breakers shared by every worker, over a rolling window.

Each execution of a rule's actions is a member of a sorted set scored by
time. When the window already holds `max_executions`, the breaker is open:
the rule's actions do not run, and on the transition a notification goes
out once (the rule's `circuit_breaker.notify` action, or a log line). It
closes by itself when the oldest execution leaves the window.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from .. import lua
from ..keys import Keys
from ..redis_client import RedisClient
from .model import Rule


@dataclass(frozen=True)
class BreakerState:
    closed: bool
    executions: int
    max_executions: int
    window_seconds: float
    closes_at: float | None = None
    just_opened: bool = False

    @property
    def state(self) -> str:
        return "closed" if self.closed else "open"

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "executions": self.executions,
            "max_executions": self.max_executions,
            "window_seconds": self.window_seconds,
            "closes_at": self.closes_at,
        }


class Breakers:
    def __init__(self, client: RedisClient, keys: Keys):
        self.client = client
        self.keys = keys
        self._script = lua.script(client, "rules/breaker")

    def pass_through(self, rule: Rule, *, record: bool = True) -> BreakerState:
        """Count an execution if the breaker is closed; say whether it was."""
        policy = rule.breaker
        closed, count, closes_at, just_opened = self._script(
            keys=[self.keys.rule_breaker(rule.name), self.keys.rule_breaker_open(rule.name)],
            args=[
                repr(time.time()),
                policy.window_seconds,
                policy.max_executions,
                uuid.uuid4().hex,
                1 if record else 0,
            ],
        )
        return BreakerState(
            closed=closed == b"1",
            executions=int(count),
            max_executions=policy.max_executions,
            window_seconds=policy.window_seconds,
            closes_at=None if closed == b"1" else float(closes_at),
            just_opened=just_opened == b"1",
        )

    def peek(self, rule: Rule) -> BreakerState:
        return self.pass_through(rule, record=False)

    def reset(self, rule_name: str) -> None:
        self.client.delete(
            self.keys.rule_breaker(rule_name), self.keys.rule_breaker_open(rule_name)
        )
