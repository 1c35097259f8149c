"""The plugin hooks of celery_durable: every extension point, documented here.

A plugin is a module (or object) with functions marked `@hookimpl`, found
through the `celery_durable` entry-point group or the `durable_plugins`
setting. The built-in triggers, conditions and actions are plugins too
(`celery_durable.default_plugins`), registered the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .rules.base import Action, Condition, Trigger

hookspec = pluggy.HookspecMarker("celery_durable")
hookimpl = pluggy.HookimplMarker("celery_durable")


@hookspec
def durable_actions() -> list[type[Action]]:
    """Return `Action` subclasses; each one's `name` is a rule's `type:`.

    Called once per app when its rules load.
    """


@hookspec
def durable_conditions() -> list[type[Condition]]:
    """Return `Condition` subclasses; each one's `name` is a key under `conditions:`."""


@hookspec
def durable_triggers() -> list[type[Trigger]]:
    """Return `Trigger` subclasses; each one's `name` is a rule's `trigger.event`.

    A trigger that sets `poll_interval` has its `poll()` called that often by
    one worker at a time, to emit events of its own (a queue backlog, say).
    """


@hookspec
def durable_event(event: Any) -> None:
    """See every event celery_durable journals in the global stream, as it happens.

    `event` is an `Activity` (type, ts, data). Called in the process where the
    event happened (often a pool child); keep it quick and never raise.
    """
