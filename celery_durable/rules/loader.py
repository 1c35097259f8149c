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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..errors import RuleProblem, RulesError
from .base import Action, Condition, Trigger
from .bounds import Between
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
# The breaker keeps one sorted-set member per execution in its window.
MAX_BREAKER_EXECUTIONS = 100_000
WINDOW_HOURS = Between(0, 24 * 7, low_open=True)
# A rules file is a small tree: these bound what YAML aliases can make of it.
MAX_DEPTH = 32
MAX_VALUES = 100_000


def parse_yaml(text: str, source: str) -> Any:
    """The YAML in `text`; a `RulesError` naming `source` if it is not YAML
    or nests too deeply for the parser."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError([f"is not valid YAML: {exc}"], source) from None
    except RecursionError:
        raise RulesError(
            [f"nests too deeply to read (at most {MAX_DEPTH} levels)"], source
        ) from None


def read_specs(rules: Any) -> tuple[list[Any], str]:
    """The list of rule mappings from the setting, and where it came from."""
    if rules is None:
        return [], "durable_rules"
    if isinstance(rules, str | Path):
        path = Path(rules)
        source = f"durable_rules file {str(path)!r}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RulesError([f"cannot read it: {exc.strerror}"], source) from None
        loaded = parse_yaml(text, source)
        _check_shape(loaded, source)
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
        _check_shape(rules, "durable_rules")
        return list(rules), "durable_rules"
    raise RulesError(
        [f"must be a list of rules or a path to a YAML file, got {type(rules).__name__}"]
    )


def written_specs(rules: Any) -> list[Any]:
    """The rules of the setting as written: a file's `${NAME}` references not
    expanded (so that exporting them shows no secret), templates not applied."""
    if isinstance(rules, str | Path):
        loaded = yaml.safe_load(Path(rules).read_text(encoding="utf-8"))
        if isinstance(loaded, dict) and "rules" in loaded:
            loaded = loaded["rules"]
        return list(loaded or [])
    return list(rules or [])


def _check_shape(value: Any, source: str) -> None:
    """Refuse what YAML aliases can make of a file before anything walks it.

    An alias may point at a structure that contains it (`a: &a [*a]`: a list
    holding itself, which any walk recurses into until RecursionError), or
    repeat a structure so often that expanding it is a "billion laughs".
    Both are refused with a RulesError saying where.
    """
    budget = [MAX_VALUES]

    def walk(node: Any, where: str, depth: int, on_path: set[int]) -> str | None:
        if not isinstance(node, dict | list | tuple):
            return None
        here = where or "the top level"
        if id(node) in on_path:
            return (
                f"{here}: contains itself (a recursive YAML alias such as `a: &a [*a]`); "
                "a rule must be a plain tree of values"
            )
        if depth >= MAX_DEPTH:
            return f"{here}: nests deeper than {MAX_DEPTH} levels"
        on_path.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, item in items:
            budget[0] -= 1
            if budget[0] < 0:
                return (
                    f"holds more than {MAX_VALUES} values once YAML aliases are expanded; "
                    "rules are small: write them out"
                )
            if isinstance(node, dict):
                step = f"{where}.{key}" if where else str(key)
            else:
                step = f"{where}[{key}]"
            found = walk(item, step, depth + 1, on_path)
            if found:
                return found
        on_path.discard(id(node))
        return None

    problem = walk(value, "", 0, set())
    if problem:
        raise RulesError([problem], source)


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
    loaded, problems = check_rules(specs, registry, source)
    if problems:
        raise RulesError(problems, source)
    return loaded


def check_rules(
    specs: list[Any], registry: PartRegistry, source: str, *, taken: Iterable[str] = ()
) -> tuple[list[Rule], list[RuleProblem]]:
    """The rules that build, and every problem of those that do not.

    Names must be unique among `specs` and must not be one of `taken` (the
    names another source holds already).
    """
    loaded: list[Rule] = []
    problems: list[RuleProblem] = []
    seen: dict[str, int] = {}
    taken = set(taken)
    for index, spec in enumerate(specs, start=1):
        name = spec.get("name") if isinstance(spec, dict) else None
        name = name if isinstance(name, str) else None
        # A name of the configuration is refused even when the rule has other
        # problems; a repeated name only between rules that build (as always).
        clash = None
        if name is not None and name in taken:
            clash = (
                f"{name!r} is the name of a rule in durable_rules (the app's configuration); "
                "choose another name, or change that rule where it is written"
            )
            problems.append(RuleProblem(clash, name, "name", index, source))
        try:
            rule = build_rule(spec, registry)
        except RuleProblems as exc:
            problems.extend(problem_of(text, name, index, source) for text in exc.problems)
            continue
        except Exception as exc:  # a plugin's part that fails in an unexpected way
            problems.append(
                RuleProblem(
                    f"could not be built: {type(exc).__name__}: {exc}", name, None, index, source
                )
            )
            continue
        if clash:
            continue
        if rule.name in seen:
            problems.append(
                RuleProblem(
                    f"{rule.name!r} is also the name of rule #{seen[rule.name]}; "
                    "rule names must be unique",
                    name,
                    "name",
                    index,
                    source,
                )
            )
            continue
        seen[rule.name] = index
        loaded.append(rule)
    return loaded, problems


# `field: message`, where a field is a path such as `trigger.conditions.queue`,
# `actions[0] (retry).delay_seconds` or `circuit_breaker.notify.type`.
_FIELD = re.compile(r"^([A-Za-z_][\w.]*(?:\[\d+\])?(?: \([^)]*\))?(?:\.[\w.]+)?): (.*)$", re.S)


def problem_of(text: str, rule: str | None, index: int | None, source: str) -> RuleProblem:
    """A `RuleProblem` from one of `build_rule`'s lines (`field: message`, or a message)."""
    found = _FIELD.match(text)
    if found:
        return RuleProblem(found.group(2), rule, found.group(1), index, source)
    return RuleProblem(text, rule, None, index, source)


class RuleProblems(Exception):
    """Everything wrong with one rule, each problem as `field: message`."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def build_rule(spec: Any, registry: PartRegistry) -> Rule:
    """A checked rule; `RuleProblems` lists every problem found, not only the first."""
    if not isinstance(spec, dict):
        raise RuleProblems([f"must be a mapping, got {type(spec).__name__}"])
    if "template" in spec:
        template = spec["template"]
        if not isinstance(template, str) or template not in TEMPLATES:
            raise RuleProblems(
                [f"template: unknown template {template!r}; known: {', '.join(sorted(TEMPLATES))}"]
            )
        spec = apply_template(spec)
    problems: list[str] = []
    unknown = set(spec) - RULE_KEYS
    if unknown:
        problems.append(
            f"unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
            f"a rule has {', '.join(sorted(RULE_KEYS))}"
        )
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("name: every rule needs a non-empty name")
    enabled = spec.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"enabled: expected true or false, got {enabled!r}")
    event, trigger, conditions = _trigger(spec.get("trigger"), registry, problems)
    extra = tuple(type(trigger).variables) if trigger is not None else ()
    actions = _actions(spec, registry, extra, problems)
    breaker = _breaker(spec.get("circuit_breaker"), registry, extra, problems)
    if problems or event is None or trigger is None or breaker is None:
        raise RuleProblems(problems)
    return Rule(
        name=str(name),
        event=event,
        trigger=trigger,
        conditions=conditions,
        actions=actions,
        breaker=breaker,
        enabled=bool(enabled),
        description=str(spec.get("description", "")),
        spec=spec,
    )


def _trigger(
    raw: Any, registry: PartRegistry, problems: list[str]
) -> tuple[str | None, Trigger | None, tuple[Condition, ...]]:
    if not isinstance(raw, dict):
        problems.append("trigger: expected a mapping with an `event:` key")
        return None, None, ()
    event = raw.get("event")
    trigger = None
    if not isinstance(event, str) or event not in registry.triggers:
        problems.append(f"trigger.event: {_unknown('trigger', event, registry.triggers)}")
        event = None
    else:
        params = {k: v for k, v in raw.items() if k not in ("event", "conditions")}
        trigger = instantiate(registry.triggers[event], params, "trigger", problems)
    conditions_raw = raw.get("conditions") or {}
    if not isinstance(conditions_raw, dict):
        problems.append("trigger.conditions: expected a mapping of condition: value")
        return event, trigger, ()
    conditions = []
    for key, value in conditions_raw.items():
        where = f"trigger.conditions.{key}"
        cls = registry.conditions.get(key) if isinstance(key, str) else None
        if cls is None:
            problems.append(f"{where}: {_unknown('condition', None, registry.conditions)}")
            continue
        if event is not None and cls.events is not None and event not in cls.events:
            problems.append(
                f"{where}: does not apply to {event} events "
                f"(only to {', '.join(sorted(cls.events))})"
            )
            continue
        try:
            conditions.append(cls(value))
        except (ValueError, TypeError) as exc:
            problems.append(f"{where}: {exc}")
    return event, trigger, tuple(conditions)


def _actions(
    spec: dict[str, Any],
    registry: PartRegistry,
    variables: tuple[str, ...],
    problems: list[str],
) -> tuple[Action, ...]:
    if "action" in spec and "actions" in spec:
        problems.append("give either `action:` or `actions:`, not both")
        return ()
    raw: Any
    if "action" in spec:
        raw, prefix = [spec["action"]], "action"
    else:
        raw, prefix = spec.get("actions"), "actions"
        if not isinstance(raw, list) or not raw:
            problems.append("actions: a rule needs `action:` or a non-empty `actions:` list")
            return ()
    actions = []
    for index, item in enumerate(raw):
        where = prefix if prefix == "action" else f"actions[{index}]"
        action = build_action(item, registry, where, variables, problems)
        if action is not None:
            actions.append(action)
    return tuple(actions)


def build_action(
    raw: Any,
    registry: PartRegistry,
    where: str,
    variables: tuple[str, ...],
    problems: list[str],
) -> Action | None:
    """The action `raw` describes, or None with its problems added to `problems`."""
    if not isinstance(raw, dict) or "type" not in raw:
        problems.append(f"{where}: expected a mapping with a `type:`")
        return None
    kind = raw["type"]
    cls = registry.actions.get(kind) if isinstance(kind, str) else None
    if cls is None:
        problems.append(f"{where}.type: {_unknown('action', kind, registry.actions)}")
        return None
    params = {k: v for k, v in raw.items() if k != "type"}
    found = len(problems)
    for field in cls.template_fields:
        value = params.get(field)
        if isinstance(value, str):
            try:
                check_template(value, variables)
            except ValueError as exc:
                problems.append(f"{where}.{field}: {exc}")
    action = instantiate(cls, params, f"{where} ({kind})", problems)
    return action if len(problems) == found else None


def _unknown(kind: str, name: Any, known: Iterable[str]) -> str:
    """What to say of a rule part that no loaded plugin registers, and where to look."""
    named = f" {name!r}" if name is not None else ""
    return (
        f"unknown {kind}{named}; known: {', '.join(sorted(known)) or 'none'} "
        f"(`celery -A <app> durable plugins` lists what each plugin registers)"
    )


def _breaker(
    raw: Any, registry: PartRegistry, variables: tuple[str, ...], problems: list[str]
) -> BreakerPolicy | None:
    if raw is None:
        return BreakerPolicy()
    if not isinstance(raw, dict):
        problems.append("circuit_breaker: expected a mapping")
        return None
    found = len(problems)
    unknown = set(raw) - BREAKER_KEYS
    if unknown:
        problems.append(f"circuit_breaker: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    max_executions = raw.get("max_executions", DEFAULT_MAX_EXECUTIONS)
    if (
        not isinstance(max_executions, int)
        or isinstance(max_executions, bool)
        or not 1 <= max_executions <= MAX_BREAKER_EXECUTIONS
    ):
        problems.append(
            f"circuit_breaker.max_executions: expected an integer from 1 to "
            f"{MAX_BREAKER_EXECUTIONS}, got {max_executions!r}"
        )
    hours = raw.get("time_window_hours", DEFAULT_WINDOW_HOURS)
    wrong = WINDOW_HOURS.problem(hours)
    if not isinstance(hours, int | float) or isinstance(hours, bool):
        wrong = f"expected a number, got {hours!r}"
    if wrong:
        problems.append(f"circuit_breaker.time_window_hours: {wrong}")
    notify = None
    if raw.get("notify") is not None:
        notify = build_action(
            raw["notify"], registry, "circuit_breaker.notify", variables, problems
        )
    if len(problems) != found:
        return None
    return BreakerPolicy(max_executions, float(hours) * 3600, notify)


def instantiate(cls: type, params: dict[str, Any], where: str, problems: list[str]) -> Any:
    """Build a rule part from its parameters, or add to `problems` precisely what is wrong.

    Every unknown, missing, mistyped and out-of-bounds parameter is reported;
    the constructor runs only when there is none (it may still refuse a
    combination with `ValueError`).
    """
    found = len(problems)
    signature = inspect.signature(cls)
    accepted = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in params if k not in accepted]
    if unknown and not takes_any:
        known = ", ".join(accepted) or "none"
        problems.append(
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
        problems.append(f"{where}: missing parameter(s) {', '.join(map(repr, missing))}")
    hints = _hints(cls)
    for key, value in params.items():
        expected, limits = _split_annotated(hints.get(key))
        if expected is not None and not _is_instance(value, expected):
            problems.append(f"{where}.{key}: expected {_type_name(expected)}, got {value!r}")
            continue
        for limit in limits:
            wrong = limit.problem(value)
            if wrong:
                problems.append(f"{where}.{key}: {wrong}")
    if len(problems) != found:
        return None
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:
        problems.append(f"{where}: {exc}")
        return None


def _split_annotated(hint: Any) -> tuple[Any, list[Any]]:
    """(the type, the bounds declared with it) of `Annotated[type, Between(...)]`."""
    if typing.get_origin(hint) is typing.Annotated:
        base, *metadata = typing.get_args(hint)
        return base, [m for m in metadata if hasattr(m, "problem")]
    return hint, []


def _hints(cls: type[Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__, include_extras=True)
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
