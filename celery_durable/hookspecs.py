"""The plugin hooks of celery_durable: every extension point, documented here.

A plugin is a module (or object) with functions marked `@hookimpl`, found
through the `celery_durable` entry-point group or the `durable_plugins`
setting. The built-in triggers, conditions and actions are plugins too
(`celery_durable.default_plugins`), registered the same way.
"""

# Hook specifications have docstrings for bodies: pluggy never calls them.
# mypy: disable-error-code="empty-body"

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
    """See every activity written to the global stream, as it is written.

    Activities are what rules react to: `task.failed` (while a rule or this
    hook listens for it), `task.orphaned`, `task.execution_time_exceeded`,
    `worker.offline`, the end of every run (`workflow.completed`,
    `workflow.failed`, `workflow.cancelled`, `workflow.timed_out`) and the
    activities of polling triggers. Not the history events of runs
    (`step.completed`, `sleep.started`, ...): read them with
    `RunHandle.events()`.

    `event` is an `Activity` (type, ts, data) exactly as stored (with
    `durable_redact_args`, without task arguments; texts cut to
    `durable_max_text_bytes`). Called in the process
    that writes it: a worker's pool child (a failed task), its main process
    (recovery, polling, timers), or a client (`RunHandle.cancel()` of a run
    that is not executing). Keep it quick; an exception is logged, never
    raised into celery_durable.
    """
