"""One version of an app's rules: those of `durable_rules` and the stored ones.

A process evaluates one `RuleSet` at a time and swaps it whole for the next
(one attribute assignment), so an evaluation never sees half of a change.
A stored rule that does not load here (it names a plugin this process
lacks) is left out and kept in `problems`; the others run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import RuleProblem
from ..redaction import redact
from .loader import check_rules
from .model import Rule
from .registry import PartRegistry

CONFIG, STORED = "config", "stored"
STORED_SOURCE = "stored rules"


@dataclass(frozen=True)
class RuleSet:
    version: int
    rules: tuple[Rule, ...]
    sources: Mapping[str, str] = field(default_factory=dict)  # rule name -> config|stored
    stored: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # specs as written
    problems: tuple[RuleProblem, ...] = ()  # stored rules that did not load here
    by_name: Mapping[str, Rule] = field(default_factory=dict)
    by_event: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)

    def problems_of(self, name: str) -> list[RuleProblem]:
        return [p for p in self.problems if p.rule == name]


def build_rule_set(
    config: list[Rule],
    stored: Mapping[str, Any],
    registry: PartRegistry,
    version: int,
) -> RuleSet:
    """The rule set of `config` rules and the `stored` specs, built whole."""
    unreadable = [
        RuleProblem(
            "is not a rule as save_rules stores it (a JSON mapping); delete it and add it again",
            name,
            source=STORED_SOURCE,
        )
        for name, spec in stored.items()
        if not isinstance(spec, dict)
    ]
    readable = [spec for spec in stored.values() if isinstance(spec, dict)]
    built, problems = check_rules(readable, registry, STORED_SOURCE, taken=[r.name for r in config])
    problems = unreadable + problems
    rules = (*config, *built)
    by_event: dict[str, list[Rule]] = defaultdict(list)
    for rule in rules:
        by_event[rule.event].append(rule)
    sources = {r.name: CONFIG for r in config}
    sources.update({r.name: STORED for r in built})
    return RuleSet(
        version=version,
        rules=rules,
        sources=sources,
        # An unreadable one by its name only: still listed, switched, deleted.
        stored={n: s if isinstance(s, dict) else {"name": n} for n, s in stored.items()},
        problems=tuple(RuleProblem(p.message, p.rule, p.field, None, p.source) for p in problems),
        by_name={r.name: r for r in rules},
        by_event={event: tuple(found) for event, found in by_event.items()},
    )


def redact_spec(spec: Any, registry: PartRegistry) -> Any:
    """A rule as written, with the secret parameters of its actions redacted.

    What the change record keeps and shows: a Slack or webhook URL (each
    action's `secret_fields`) appears as `redact()` makes it, so a change of
    URL shows without showing the URL.
    """
    if not isinstance(spec, dict):
        return spec

    def action(raw: Any) -> Any:
        kind = raw.get("type") if isinstance(raw, dict) else None
        cls = registry.actions.get(kind) if isinstance(kind, str) else None
        if cls is None:
            return raw
        return {k: redact(v) if k in cls.secret_fields else v for k, v in raw.items()}

    redacted = dict(spec)
    if "action" in redacted:
        redacted["action"] = action(redacted["action"])
    if isinstance(redacted.get("actions"), list):
        redacted["actions"] = [action(a) for a in redacted["actions"]]
    breaker = redacted.get("circuit_breaker")
    if isinstance(breaker, dict) and "notify" in breaker:
        redacted["circuit_breaker"] = {**breaker, "notify": action(breaker["notify"])}
    return redacted
