"""The three kinds of rule parts, as base classes plugins subclass.

A rule part's parameters are its constructor's keyword arguments: the rule
loader checks them against the signature (missing, unknown, wrong type) and
refuses a bad rule before the worker starts, naming the rule and the field.
A constructor may raise `ValueError` or `TypeError` for a value it does not
accept; the message is reported with the rule and field too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from ..redaction import redact, scrub

if TYPE_CHECKING:
    from ..activity import Activity
    from .context import RuleContext


class Trigger:
    """Names the event type a rule reacts to (`trigger.event`).

    Parameters other than `event` and `conditions` in a rule's `trigger:`
    mapping go to the constructor. A trigger that polls sets `poll_interval`
    (seconds) and implements `poll()`, which one worker at a time calls to
    emit events of this trigger's type. `variables` names the fields of its
    events that message templates may show (`{length}`).
    """

    name: ClassVar[str] = ""
    #: Seconds between polls; a class default a constructor may override per rule.
    poll_interval: float | None = None
    #: Names in this trigger's event data that message templates may use too.
    variables: ClassVar[tuple[str, ...]] = ()

    def matches(self, event: Activity) -> bool:
        """Does this event concern the rule? By default: it has our type."""
        return event.type == self.name

    def poll(self, context: RuleContext) -> Iterable[dict[str, Any]]:
        """Data of the events to emit now (each becomes an event of our type)."""
        return ()


class Condition:
    """One key under `trigger.conditions`; all of a rule's conditions must hold.

    The constructor takes the YAML value. `events` lists the event types the
    condition makes sense for (None: all), so a rule pairing a condition with
    a trigger it cannot apply to is refused at load.
    """

    name: ClassVar[str] = ""
    events: ClassVar[frozenset[str] | None] = None
    #: Conditions are checked cheapest first; one that goes to Redis says so.
    cost: ClassVar[int] = 0

    def __init__(self, value: Any):
        self.value = value

    def matches(self, event: Activity, context: RuleContext) -> bool:
        raise NotImplementedError

    def explain(self, event: Activity, context: RuleContext) -> str:
        """Why it holds or not, for dry runs and history."""
        return f"{self.name}={self.value!r}"


class Action:
    """Something a rule does, from the worker's action queue, never inline.

    `run()` returns a result to record in the rule's history (anything
    msgpack-friendly); raising records a failure. `template_fields` names the
    string parameters rendered with the event's variables (checked at load).
    `notification = True` marks actions that "send test notification" runs.
    `secret_fields` names the parameters that are credentials (a webhook URL,
    an API key): they are shown and stored only redacted, as
    `https://host/…#a1b2c3`, in dry runs, history, error messages and logs.
    """

    name: ClassVar[str] = ""
    template_fields: ClassVar[tuple[str, ...]] = ()
    notification: ClassVar[bool] = False
    secret_fields: ClassVar[tuple[str, ...]] = ()

    def run(self, event: Activity, context: RuleContext) -> Any:
        raise NotImplementedError

    def preview(self, event: Activity, context: RuleContext) -> dict[str, Any]:
        """What `run()` would do, rendered, with no side effect (for dry runs)."""
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        for field in self.template_fields:
            if isinstance(params.get(field), str):
                params[field] = context.render(params[field], event)
        for field in self.secret_fields:
            if params.get(field) is not None:
                params[field] = redact(params[field])
        return {"type": self.name, **params}

    def secrets(self) -> list[Any]:
        """The values of this action's secret parameters, to scrub from its errors."""
        return [getattr(self, field, None) for field in self.secret_fields]

    def describe_error(self, exc: BaseException) -> str:
        """`Type: message` of an error of `run()`, with URLs and secrets redacted."""
        return scrub(f"{type(exc).__name__}: {exc}", self.secrets())
