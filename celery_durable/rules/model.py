"""A loaded, validated rule: what the engine evaluates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import Action, Condition, Trigger

DEFAULT_MAX_EXECUTIONS = 100
DEFAULT_WINDOW_HOURS = 1.0


@dataclass(frozen=True)
class BreakerPolicy:
    max_executions: int = DEFAULT_MAX_EXECUTIONS
    window_seconds: float = DEFAULT_WINDOW_HOURS * 3600
    notify: Action | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    event: str
    trigger: Trigger
    conditions: tuple[Condition, ...]
    actions: tuple[Action, ...]
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    enabled: bool = True
    description: str = ""
    spec: dict[str, Any] = field(default_factory=dict)  # as written (templates applied)
