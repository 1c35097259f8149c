"""A plugin registered through the `durable_plugins` setting in the tests."""

from __future__ import annotations

from typing import Any

from celery_durable import Action, Condition, hookimpl


class Weekday(Condition):
    """Holds when the event's data says it happened on one of these days."""

    name = "weekday"

    def __init__(self, value: Any):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of day names, got {value!r}")
        super().__init__(value)

    def matches(self, event: Any, context: Any) -> bool:
        return event.data.get("weekday") in self.value


class Remember(Action):
    """Pushes the rendered note to a Redis list (a stand-in for any side effect)."""

    name = "remember"
    template_fields = ("note",)

    def __init__(self, key: str, note: str = "{task_name}"):
        self.key = key
        self.note = note

    def run(self, event: Any, context: Any) -> Any:
        context.redis.rpush(self.key, context.render(self.note, event))
        return {"pushed_to": self.key}


# Every event the `durable_event` hook saw in this process, oldest first.
SEEN_EVENTS: list[Any] = []


@hookimpl
def durable_event(event: Any) -> None:
    SEEN_EVENTS.append(event)


@hookimpl
def durable_conditions() -> list[type[Condition]]:
    return [Weekday]


@hookimpl
def durable_actions() -> list[type[Action]]:
    return [Remember]
