"""Workflow definitions and the process-wide registry of them by name.

Like Celery's `shared_task`, a workflow is defined once at import time and is
usable from any app that has celery_durable installed; the worker looks a run's
workflow up here by the name recorded in `workflow.started`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ConfigurationError, ScheduleError, WorkflowNotFoundError
from ..options import parse_count, parse_duration
from ..schedules.timing import Timing, parse_schedule_option


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    max_duration: float | None = None
    max_retries: int = 0
    origin: str = ""  # module.qualname of the code, to tell re-imports from clashes
    schedule: Timing | None = None  # @workflow(schedule=...): stored when a worker starts


_registry: dict[str, WorkflowDefinition] = {}


class Startable(Protocol):
    """A @workflow function or a Workflow subclass: what `start()` takes
    besides a workflow's name. Named by what it carries, so that starting a
    run needs nothing of `definition.py`, which starts runs itself
    (`.start()`)."""

    @property
    def definition(self) -> WorkflowDefinition: ...


def define(
    name: str,
    fn: Callable[..., Any],
    *,
    is_async: bool | None = None,
    max_duration: float | str | None = None,
    max_retries: int = 0,
    origin: str,
    schedule: object = None,
    timezone: str | None = None,
) -> WorkflowDefinition:
    """Validate a workflow's options and register it under `name`.

    A bad `schedule` (cron string, interval) or `timezone` is refused here,
    at import, rather than when a worker would first fire it.
    """
    where = f"workflow {name!r}"
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"workflow name must be a non-empty string, got {name!r}")
    timing = None
    if schedule is not None:
        timing = parse_schedule_option(schedule, timezone, where=f"{where}: schedule")
    elif timezone is not None:
        raise ScheduleError(f"{where}: timezone={timezone!r} needs schedule= (a cron string)")
    definition = WorkflowDefinition(
        name=name,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn) if is_async is None else is_async,
        max_duration=parse_duration(max_duration, field=f"{where}: max_duration"),
        max_retries=parse_count(max_retries, field=f"{where}: max_retries"),
        origin=origin,
        schedule=timing,
    )
    existing = _registry.get(name)
    if existing is not None and existing.origin != origin:
        raise ConfigurationError(
            f"workflow name {name!r} is taken by {existing.origin}; "
            f"{origin} must use another name (name=...)"
        )
    _registry[name] = definition
    return definition


def lookup(name: str) -> WorkflowDefinition:
    try:
        return _registry[name]
    except KeyError:
        raise WorkflowNotFoundError(
            f"workflow {name!r} is not registered in this process; import the module that "
            "defines it in the worker (Celery's `imports`/`include` settings, or the module "
            "passed to -A)"
        ) from None


def registered() -> list[str]:
    return sorted(_registry)
