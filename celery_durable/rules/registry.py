"""The triggers, conditions and actions that plugins provide, by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import pluggy

from ..errors import ConfigurationError
from .base import Action, Condition, Trigger

Part = TypeVar("Part", Trigger, Condition, Action)


@dataclass(frozen=True)
class PartRegistry:
    triggers: dict[str, type[Trigger]]
    conditions: dict[str, type[Condition]]
    actions: dict[str, type[Action]]

    @classmethod
    def collect(cls, pm: pluggy.PluginManager) -> PartRegistry:
        return cls(
            triggers=_by_name(pm.hook.durable_triggers(), Trigger, "trigger"),
            conditions=_by_name(pm.hook.durable_conditions(), Condition, "condition"),
            actions=_by_name(pm.hook.durable_actions(), Action, "action"),
        )


def _by_name(results: list[list[Any]], base: type[Part], kind: str) -> dict[str, type[Part]]:
    found: dict[str, type[Part]] = {}
    for classes in results:
        for part in classes or ():
            if not (isinstance(part, type) and issubclass(part, base)) or not part.name:
                raise ConfigurationError(
                    f"a plugin returned {part!r} as a {kind}: expected a subclass of "
                    f"celery_durable.{base.__name__} with a `name`"
                )
            other = found.get(part.name)
            if other is not None and other is not part:
                raise ConfigurationError(
                    f"two plugins define the {kind} {part.name!r}: "
                    f"{other.__module__}.{other.__qualname__} and "
                    f"{part.__module__}.{part.__qualname__}"
                )
            found[part.name] = part
    return found
