"""Turning `durable_rules` (a YAML path or a list of dicts) into checked rules.

Every problem is found before a worker starts: an unknown trigger, condition
or action, a missing, unknown or mistyped parameter, an invalid regex or
template. All problems are reported at once, each naming the rule and the
field (`rule 'Auto-retry' (#1): trigger.conditions.error_pattern: ...`).
"""

from __future__ import annotations

import inspect
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigurationError
from .base import Action, Condition, Trigger
from .model import DEFAULT_MAX_EXECUTIONS, DEFAULT_WINDOW_HOURS, BreakerPolicy, Rule
from .registry import PartRegistry
from .render import check_template
from .templates import TEMPLATES, apply_template

RULE_KEYS = {
    "name",
    "enabled",
    "description",
    "template",
    "trigger",
    "action",
    "actions",
    "circuit_breaker",
}
BREAKER_KEYS = {"max_executions", "time_window_hours", "notify"}


class RulesError(ConfigurationError):
    """`durable_rules` has problems; the message lists each with its rule and field."""

    def __init__(self, problems: list[str], source: str = "durable_rules"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")


class _Problem(Exception):
    pass


def read_specs(rules: Any) -> tuple[list[Any], str]:
    """The list of rule mappings from the setting, and where it came from."""
    if rules is None:
        return [], "durable_rules"
    if isinstance(rules, str | Path):
        path = Path(rules)
        source = f"durable_rules file {str(path)!r}"
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RulesError([f"cannot read it: {exc.strerror}"], source) from None
        except yaml.YAMLError as exc:
            raise RulesError([f"is not valid YAML: {exc}"], source) from None
        if isinstance(loaded, dict) and "rules" in loaded:
            loaded = loaded["rules"]
        missing: set[str] = set()
        loaded = _expand_environment(loaded, missing)
        if missing:
            raise RulesError(
                [
                    f"environment variable(s) {', '.join(sorted(missing))} not set "
                    "(used as ${NAME} in the file)"
                ],
                source,
            )
        if loaded is None:
            return [], source
        if not isinstance(loaded, list):
            raise RulesError(["must hold a list of rules"], source)
        return loaded, source
    if isinstance(rules, list | tuple):
        return list(rules), "durable_rules"
    raise RulesError(
        [f"must be a list of rules or a path to a YAML file, got {type(rules).__name__}"]
    )


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_environment(value: Any, missing: set[str]) -> Any:
    """`${NAME}` in a rule file's strings is the environment variable NAME.

    Keeps secrets (a Slack webhook URL) out of the file.
    """
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                missing.add(name)
                return match.group(0)
            return os.environ[name]

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, list):
        return [_expand_environment(item, missing) for item in value]
    if isinstance(value, dict):
        return {k: _expand_environment(v, missing) for k, v in value.items()}
    return value


def load_rules(rules: Any, registry: PartRegistry) -> list[Rule]:
    specs, source = read_specs(rules)
    loaded: list[Rule] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs, start=1):
        label = _label(spec, index)
        try:
            rule = build_rule(spec, registry, label)
        except _Problem as exc:
            problems.append(f"{label}: {exc}")
            continue
        if rule.name in seen:
            problems.append(
                f"{label}: name: {rule.name!r} is also the name of rule "
                f"#{seen[rule.name]}; rule names must be unique"
            )
            continue
        seen[rule.name] = index
        loaded.append(rule)
    if problems:
        raise RulesError(problems, source)
    return loaded


def build_rule(spec: Any, registry: PartRegistry, label: str = "rule") -> Rule:
    if not isinstance(spec, dict):
        raise _Problem(f"must be a mapping, got {type(spec).__name__}")
    if "template" in spec:
        if spec["template"] not in TEMPLATES:
            raise _Problem(
                f"template: unknown template {spec['template']!r}; "
                f"known: {', '.join(sorted(TEMPLATES))}"
            )
        spec = apply_template(spec)
    unknown = set(spec) - RULE_KEYS
    if unknown:
        raise _Problem(
            f"unknown field(s) {', '.join(sorted(unknown))}; "
            f"a rule has {', '.join(sorted(RULE_KEYS))}"
        )
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _Problem("name: every rule needs a non-empty name")
    enabled = spec.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _Problem(f"enabled: expected true or false, got {enabled!r}")
    event, trigger, conditions = _trigger(spec.get("trigger"), registry)
    extra = tuple(type(trigger).variables)
    actions = _actions(spec, registry, extra)
    breaker = _breaker(spec.get("circuit_breaker"), registry, extra)
    return Rule(
        name=name,
        event=event,
        trigger=trigger,
        conditions=conditions,
        actions=actions,
        breaker=breaker,
        enabled=enabled,
        description=str(spec.get("description", "")),
        spec=spec,
    )


def _label(spec: Any, index: int) -> str:
    name = spec.get("name") if isinstance(spec, dict) else None
    return f"rule {name!r} (#{index})" if isinstance(name, str) else f"rule #{index}"


def _trigger(raw: Any, registry: PartRegistry) -> tuple[str, Trigger, tuple[Condition, ...]]:
    if not isinstance(raw, dict):
        raise _Problem("trigger: expected a mapping with an `event:` key")
    event = raw.get("event")
    if event not in registry.triggers:
        raise _Problem(
            f"trigger.event: unknown trigger {event!r}; "
            f"known: {', '.join(sorted(registry.triggers))}"
        )
    params = {k: v for k, v in raw.items() if k not in ("event", "conditions")}
    trigger = instantiate(registry.triggers[event], params, "trigger")
    conditions_raw = raw.get("conditions") or {}
    if not isinstance(conditions_raw, dict):
        raise _Problem("trigger.conditions: expected a mapping of condition: value")
    conditions = []
    for key, value in conditions_raw.items():
        where = f"trigger.conditions.{key}"
        cls = registry.conditions.get(key)
        if cls is None:
            raise _Problem(
                f"{where}: unknown condition; known: {', '.join(sorted(registry.conditions))}"
            )
        if cls.events is not None and event not in cls.events:
            raise _Problem(
                f"{where}: does not apply to {event} events "
                f"(only to {', '.join(sorted(cls.events))})"
            )
        try:
            conditions.append(cls(value))
        except (ValueError, TypeError) as exc:
            raise _Problem(f"{where}: {exc}") from None
    return event, trigger, tuple(conditions)


def _actions(
    spec: dict[str, Any], registry: PartRegistry, variables: tuple[str, ...] = ()
) -> tuple[Action, ...]:
    if "action" in spec and "actions" in spec:
        raise _Problem("give either `action:` or `actions:`, not both")
    if "action" in spec:
        raw, prefix = [spec["action"]], "action"
    else:
        raw, prefix = spec.get("actions"), "actions"
        if not isinstance(raw, list) or not raw:
            raise _Problem("actions: a rule needs `action:` or a non-empty `actions:` list")
    actions = []
    for index, item in enumerate(raw):
        where = prefix if prefix == "action" else f"actions[{index}]"
        actions.append(build_action(item, registry, where, variables))
    return tuple(actions)


def build_action(
    raw: Any, registry: PartRegistry, where: str, variables: tuple[str, ...] = ()
) -> Action:
    if not isinstance(raw, dict) or "type" not in raw:
        raise _Problem(f"{where}: expected a mapping with a `type:`")
    kind = raw["type"]
    cls = registry.actions.get(kind)
    if cls is None:
        raise _Problem(
            f"{where}.type: unknown action {kind!r}; known: {', '.join(sorted(registry.actions))}"
        )
    params = {k: v for k, v in raw.items() if k != "type"}
    action = instantiate(cls, params, f"{where} ({kind})")
    for field in cls.template_fields:
        value = params.get(field)
        if isinstance(value, str):
            try:
                check_template(value, variables)
            except ValueError as exc:
                raise _Problem(f"{where}.{field}: {exc}") from None
    return action


def _breaker(raw: Any, registry: PartRegistry, variables: tuple[str, ...] = ()) -> BreakerPolicy:
    if raw is None:
        return BreakerPolicy()
    if not isinstance(raw, dict):
        raise _Problem("circuit_breaker: expected a mapping")
    unknown = set(raw) - BREAKER_KEYS
    if unknown:
        raise _Problem(f"circuit_breaker: unknown field(s) {', '.join(sorted(unknown))}")
    max_executions = raw.get("max_executions", DEFAULT_MAX_EXECUTIONS)
    if (
        not isinstance(max_executions, int)
        or isinstance(max_executions, bool)
        or max_executions < 1
    ):
        raise _Problem(
            f"circuit_breaker.max_executions: expected an integer >= 1, got {max_executions!r}"
        )
    hours = raw.get("time_window_hours", DEFAULT_WINDOW_HOURS)
    if not isinstance(hours, int | float) or isinstance(hours, bool) or hours <= 0:
        raise _Problem(f"circuit_breaker.time_window_hours: expected a number > 0, got {hours!r}")
    notify = None
    if raw.get("notify") is not None:
        notify = build_action(raw["notify"], registry, "circuit_breaker.notify", variables)
    return BreakerPolicy(max_executions, float(hours) * 3600, notify)


def instantiate(cls: type, params: dict[str, Any], where: str) -> Any:
    """Build a rule part from its parameters, or say precisely what is wrong."""
    signature = inspect.signature(cls)
    accepted = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in params if k not in accepted]
    if unknown and not takes_any:
        known = ", ".join(accepted) or "none"
        raise _Problem(
            f"{where}: unknown parameter(s) {', '.join(map(repr, unknown))}; it takes: {known}"
        )
    missing = [
        name
        for name, p in accepted.items()
        if p.default is p.empty
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and name not in params
    ]
    if missing:
        raise _Problem(f"{where}: missing parameter(s) {', '.join(map(repr, missing))}")
    hints = _hints(cls)
    for key, value in params.items():
        expected = hints.get(key)
        if expected is not None and not _is_instance(value, expected):
            raise _Problem(f"{where}.{key}: expected {_type_name(expected)}, got {value!r}")
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:
        raise _Problem(f"{where}: {exc}") from None


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: skip type checks, keep the rest
        return {}


def _is_instance(value: Any, expected: Any) -> bool:
    if expected is Any:
        return True
    options = typing.get_args(expected) if _is_union(expected) else (expected,)
    for option in options:
        origin = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return True
        if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if origin is int and isinstance(value, bool):
            continue
        if isinstance(origin, type) and isinstance(value, origin):
            return True
        if not isinstance(origin, type):
            return True  # a typing construct we do not check
    return False


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _type_name(tp: Any) -> str:
    if _is_union(tp):
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(typing.get_origin(tp) or tp, "__name__", str(tp))
