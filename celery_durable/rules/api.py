"""Operating rules from code (and from the CLI and the dashboard): store, delete,
list, export, switch, inspect, reset.

Every function works outside a worker too (a shell, the CLI, a web server):
it reads the stored rules afresh, and its changes reach every worker through
the stored rule set's version (see `RuleEngine.refresh`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from celery import Celery

from ..errors import ConfigurationError, RuleProblem, RulesError
from ..extension import extension_for
from .engine import RuleEngine, rule_engine
from .loader import _check_shape, check_rules, written_specs
from .ruleset import CONFIG, STORED
from .store import encode_spec

SAVE_SOURCE = "save_rules"


def _engine(app: Celery | None) -> RuleEngine:
    engine = rule_engine(extension_for(app))
    engine.refresh(force=True)  # what is stored now, not what this process saw last
    return engine


def _known(engine: RuleEngine, name: str, *, stored_too: bool = False) -> None:
    if name not in engine.by_name and not (stored_too and name in engine.current.stored):
        known = ", ".join(sorted(engine.by_name)) or "none"
        raise ConfigurationError(f"no rule named {name!r}; loaded rules: {known}")


def list_rules(app: Celery | None = None) -> list[dict[str, Any]]:
    """Each rule with its source (`config` or `stored`), enabled state, breaker
    state, last firing, and problems: a stored rule that this process or a
    worker could not load (a plugin it lacks) is listed with them, not hidden."""
    engine = _engine(app)
    current = engine.current
    reported = _reported_problems(engine)
    listed = []
    for rule in current.rules:
        last = engine.history.last(rule.name)
        listed.append(
            {
                "name": rule.name,
                "source": current.sources.get(rule.name, CONFIG),
                "event": rule.event,
                "description": rule.description,
                "enabled": engine.is_enabled(rule),
                "enabled_in_file": rule.enabled,
                "switch": _switch_name(engine.switch(rule.name)),
                "conditions": [c.name for c in rule.conditions],
                "actions": [a.name for a in rule.actions],
                "breaker": engine.breakers.peek(rule).as_dict(),
                "last_fired": last["ts"] if last else None,
                "last_outcome": last["outcome"] if last else None,
                "problems": reported.get(rule.name, []),
                "version": current.version,
            }
        )
    for name, spec in current.stored.items():
        if name in current.by_name:
            continue
        trigger = spec.get("trigger")
        local = [{"worker": None, **p.as_dict()} for p in current.problems_of(name)]
        listed.append(
            {
                "name": name,
                "source": STORED,
                "event": trigger.get("event") if isinstance(trigger, dict) else None,
                "description": str(spec.get("description", "")),
                "enabled": False,  # not loaded here: it cannot fire here
                "enabled_in_file": spec.get("enabled", True),
                "switch": _switch_name(engine.switch(name)),
                "conditions": [],
                "actions": [],
                "breaker": None,
                "last_fired": None,
                "last_outcome": None,
                "problems": local + reported.get(name, []),
                "version": current.version,
            }
        )
    return listed


def _reported_problems(engine: RuleEngine) -> dict[str, list[dict[str, Any]]]:
    """Problems workers reported loading the current version of the stored rules, by rule."""
    by_rule: dict[str, list[dict[str, Any]]] = {}
    raw: dict[bytes, bytes] = engine.ext.redis.hgetall(  # type: ignore[assignment]
        engine.ext.keys.rule_load_problems()
    )
    for worker, report in sorted(raw.items()):
        found = json.loads(report)
        if found.get("version") != engine.current.version:
            continue  # about another version: that worker has moved on, or is gone
        for problem in found.get("problems", []):
            entry = {"worker": worker.decode(), **problem}
            by_rule.setdefault(problem.get("rule") or "", []).append(entry)
    return by_rule


def validate_rules(
    rules: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    app: Celery | None = None,
    *,
    source: str = SAVE_SOURCE,
) -> list[RuleProblem]:
    """Every problem `save_rules(rules)` would refuse them for; [] when it would store them.

    Checks as the workers load rules (same messages, each naming the rule
    and field), and stores nothing: for an editor that shows the errors
    before saving.
    """
    # Only the configuration's rules and the loaded parts are needed: no refresh.
    return _check(rule_engine(extension_for(app)), rules, source)[1]


def save_rules(
    rules: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    app: Celery | None = None,
    *,
    source: str = SAVE_SOURCE,
) -> list[dict[str, Any]]:
    """Store rules in Redis; every worker runs them within about a second, no restart.

    `rules` is a list of rule mappings as in `durable_rules` (a single one
    is taken too). A stored rule of the same name is replaced: its breaker
    and history go on under the new definition (a rename is a new rule).
    All are checked first, as the workers load rules: with any problem,
    RulesError lists every one (`details`: `RuleProblem`s naming rule and
    field) and nothing is stored. A name from `durable_rules` is refused.
    `source` names where the rules come from in the problems (a file).
    Returns, for each rule, its name and `added`, `changed` or `unchanged`.
    """
    engine = _engine(app)
    specs, problems = _check(engine, rules, source)
    if problems:
        raise RulesError(problems, source)
    before = engine.current.stored
    version, changes = engine.store.write({spec["name"]: spec for spec in specs})
    engine.refresh(force=True)
    changed = {c["rule"]: c["action"] for c in changes}
    outcome = {"add": "added", "change": "changed"}
    return [
        {
            "name": spec["name"],
            "change": outcome.get(changed.get(spec["name"], ""), "unchanged"),
            "replaced": spec["name"] in before,
            "version": version,
        }
        for spec in specs
    ]


def _check(
    engine: RuleEngine, rules: Sequence[Mapping[str, Any]] | Mapping[str, Any], source: str
) -> tuple[list[dict[str, Any]], list[RuleProblem]]:
    """The specs as they would be stored (plain JSON values), and their problems."""
    if isinstance(rules, Mapping):
        rules = [rules]
    if not isinstance(rules, Sequence) or isinstance(rules, str | bytes):
        raise RulesError(
            [f"expected a list of rules (mappings), got {type(rules).__name__}"], source
        )
    _check_shape(list(rules), source)
    specs: list[dict[str, Any]] = []
    problems: list[RuleProblem] = []
    for index, spec in enumerate(rules, start=1):
        name = spec.get("name") if isinstance(spec, Mapping) else None
        name = name if isinstance(name, str) else None
        try:
            specs.append(json.loads(encode_spec(spec)) if isinstance(spec, Mapping) else spec)
        except (TypeError, ValueError) as exc:
            problems.append(
                RuleProblem(
                    f"holds a value that cannot be stored as JSON ({exc}); "
                    "write dates and other objects as strings",
                    name,
                    None,
                    index,
                    source,
                )
            )
            specs.append(dict(spec))
    config = [r.name for r in engine.config_rules]
    problems += check_rules(specs, engine.registry, source, taken=config)[1]
    return specs, sorted(problems, key=lambda p: p.index or 0)


def delete_rule(name: str, app: Celery | None = None) -> None:
    """Delete a stored rule; every worker stops running it within about a second.

    A rule from `durable_rules` cannot be deleted here (change the
    configuration, or `set_rule_enabled(name, False)`). Its run-time switch
    goes with it; its history stays until it expires.
    """
    engine = _engine(app)
    if name in {r.name for r in engine.config_rules}:
        raise ConfigurationError(
            f"rule {name!r} comes from durable_rules (the app's configuration): remove it "
            "there, or disable it with `rules disable`"
        )
    if name not in engine.current.stored:
        known = ", ".join(sorted(engine.current.stored)) or "none"
        raise ConfigurationError(f"no stored rule named {name!r}; stored rules: {known}")
    engine.store.write({}, (name,))
    engine.set_switch(name, None)
    engine.refresh(force=True)


def export_rules(app: Celery | None = None) -> str:
    """All rules as YAML (those of `durable_rules`, then the stored ones), loadable again.

    A rule of `durable_rules` is written as it is written there (a file's
    `${NAME}` environment references stay references); a stored rule as it
    was saved, secrets included: the export is for loading again.
    """
    engine = _engine(app)
    specs = [dict(spec) for spec in written_specs(engine.ext.settings.rules)]
    specs += [dict(spec) for spec in engine.current.stored.values()]
    return yaml.safe_dump(specs, sort_keys=False, allow_unicode=True)


def rule_changes(
    name: str | None = None,
    *,
    limit: int = 50,
    before: str | None = None,
    app: Celery | None = None,
) -> list[dict[str, Any]]:
    """The recorded changes to the rules (of one rule, or all), newest first.

    Each: `id` (the cursor to pass as `before` for the next page), `ts`,
    `action` (add, change, delete, enable, disable, clear-switch), `rule`,
    `before` and `after` (the spec, or the switch), `host`, `user`, `version`.
    """
    if not 1 <= limit <= 1000:
        raise ConfigurationError(f"limit must be between 1 and 1000, got {limit}")
    return rule_engine(extension_for(app)).store.changes(name, limit=limit, before=before)


def set_rule_enabled(name: str, enabled: bool | None, app: Celery | None = None) -> None:
    """Switch a rule on or off in every worker (within a second); None clears the switch.

    The switch is stored in Redis and wins over the rule's `enabled:` in the
    rules file, also after workers restart, until it is cleared; then the
    file decides again.
    """
    engine = _engine(app)
    _known(engine, name, stored_too=True)
    before = engine.switch(name, fresh=True)
    engine.set_switch(name, enabled)
    engine.store.record_switch(name, enabled, before)


def _switch_name(switch: bool | None) -> str | None:
    return None if switch is None else "on" if switch else "off"


def rule_history(
    name: str, *, limit: int = 50, before: str | None = None, app: Celery | None = None
) -> list[dict[str, Any]]:
    """The rule's matched evaluations, newest first, paged by entry id.

    Also of a rule no longer loaded (a deleted stored rule) while its
    history lasts (`durable_retention`).
    """
    engine = _engine(app)
    entries = engine.history.read(name, limit=limit, before=before)
    if not entries and before is None:
        _known(engine, name, stored_too=True)
    return entries


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
