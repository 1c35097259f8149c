"""Operating rules from code (and from the CLI): list, switch, inspect, reset."""

from __future__ import annotations

from typing import Any

from celery import Celery

from ..errors import ConfigurationError
from ..extension import extension_for
from .engine import RuleEngine, rule_engine


def _engine(app: Celery | None) -> RuleEngine:
    return rule_engine(extension_for(app))


def _known(engine: RuleEngine, name: str) -> None:
    if name not in engine.by_name:
        known = ", ".join(sorted(engine.by_name)) or "none"
        raise ConfigurationError(f"no rule named {name!r}; loaded rules: {known}")


def list_rules(app: Celery | None = None) -> list[dict[str, Any]]:
    """Each loaded rule with its enabled state, breaker state and last firing."""
    engine = _engine(app)
    listed = []
    for rule in engine.rules:
        last = engine.history.last(rule.name)
        listed.append(
            {
                "name": rule.name,
                "event": rule.event,
                "enabled": engine.is_enabled(rule),
                "enabled_in_file": rule.enabled,
                "switch": _switch_name(engine.switch(rule.name)),
                "conditions": [c.name for c in rule.conditions],
                "actions": [a.name for a in rule.actions],
                "breaker": engine.breakers.peek(rule).as_dict(),
                "last_fired": last["ts"] if last else None,
                "last_outcome": last["outcome"] if last else None,
            }
        )
    return listed


def set_rule_enabled(name: str, enabled: bool | None, app: Celery | None = None) -> None:
    """Switch a rule on or off in every worker (within a second); None clears the switch.

    The switch is stored in Redis and wins over the rule's `enabled:` in the
    rules file, also after workers restart, until it is cleared; then the
    file decides again.
    """
    engine = _engine(app)
    _known(engine, name)
    engine.set_switch(name, enabled)


def _switch_name(switch: bool | None) -> str | None:
    return None if switch is None else "on" if switch else "off"


def rule_history(
    name: str, *, limit: int = 50, before: str | None = None, app: Celery | None = None
) -> list[dict[str, Any]]:
    """The rule's matched evaluations, newest first, paged by entry id."""
    engine = _engine(app)
    _known(engine, name)
    return engine.history.read(name, limit=limit, before=before)


def breaker_state(name: str, app: Celery | None = None) -> dict[str, Any]:
    engine = _engine(app)
    _known(engine, name)
    return engine.breakers.peek(engine.by_name[name]).as_dict()


def reset_breaker(name: str, app: Celery | None = None) -> None:
    """Close the rule's breaker now and forget the executions in its window."""
    engine = _engine(app)
    _known(engine, name)
    engine.breakers.reset(name)


def retry_chain(task_id: str, app: Celery | None = None) -> list[str]:
    """The task ids of a retry chain the rules made: original, retry 1, retry 2, ..."""
    ext = extension_for(app)
    root = ext.redis.get(ext.keys.retry_root(task_id))
    root_id = root.decode() if root else task_id
    retries = [t.decode() for t in ext.redis.lrange(ext.keys.retry_chain(root_id), 0, -1)]
    return [root_id, *retries]
