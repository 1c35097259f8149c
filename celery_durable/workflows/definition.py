"""`@workflow` and `Workflow`: the two ways to define a durable workflow."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .registry import WorkflowDefinition, define

if TYPE_CHECKING:
    from celery import Celery


class WorkflowFunction:
    """What `@workflow` returns: the function, plus `.start()` and its definition.

    Calling it directly runs the body without a journal, like calling a Celery
    task runs it locally; durable execution starts with `.start()`.
    """

    def __init__(self, fn: Callable[..., Any], definition: WorkflowDefinition):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.definition = definition

    @property
    def name(self) -> str:
        return self.definition.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def start(
        self,
        *args: Any,
        idempotency_key: str | None = None,
        app: Celery | None = None,
        **kwargs: Any,
    ) -> Any:
        """`start(this workflow, *args, ...)`: see `celery_durable.start`."""
        from .runs import start

        return start(self, *args, idempotency_key=idempotency_key, app=app, **kwargs)

    def __repr__(self) -> str:
        return f"<workflow {self.definition.name}>"


def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    max_duration: float | str | None = None,
    max_retries: int = 0,
    schedule: str | float | None = None,
    timezone: str | None = None,
) -> Any:
    """Define a durable workflow from a plain or `async def` function.

    `max_duration` bounds the whole run (it ends `timed_out` past it);
    `max_retries` re-runs a failed workflow as a new attempt, in which steps
    that completed before are replayed, not run again. `schedule` (a cron
    string read in `timezone`, or an interval such as "30s") starts a run on
    every tick, with no Celery Beat: the schedule, named like the workflow,
    is stored when a worker starts. A bad one is refused here, at import.
    """

    def decorate(func: Callable[..., Any]) -> WorkflowFunction:
        origin = f"{func.__module__}.{func.__qualname__}"
        definition = define(
            name or origin,
            func,
            max_duration=max_duration,
            max_retries=max_retries,
            origin=origin,
            schedule=schedule,
            timezone=timezone,
        )
        return WorkflowFunction(func, definition)

    if fn is not None:
        return decorate(fn)
    return decorate


class Workflow:
    """Class form of a workflow: subclass, set options, implement `run()`.

    ```python
    class OnboardUser(Workflow):
        name = "onboard_user"
        max_duration = "30d"
        def run(self, user_id): ...
    ```
    `schedule` and `timezone` work as in `@workflow`.
    A fresh instance executes each run (and each replay of it).
    """

    name: ClassVar[str | None] = None
    max_duration: ClassVar[float | str | None] = None
    max_retries: ClassVar[int] = 0
    schedule: ClassVar[str | float | None] = None
    timezone: ClassVar[str | None] = None
    definition: ClassVar[WorkflowDefinition]

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "run" not in cls.__dict__ and not hasattr(cls, "definition"):
            return  # an intermediate base class without a run()
        origin = f"{cls.__module__}.{cls.__qualname__}"
        run = cls.run
        is_async = inspect.iscoroutinefunction(run)
        entry: Callable[..., Any]
        if is_async:

            async def entry(*args: Any, **kw: Any) -> Any:
                return await cls().run(*args, **kw)
        else:

            def entry(*args: Any, **kw: Any) -> Any:
                return cls().run(*args, **kw)

        cls.definition = define(
            cls.__dict__.get("name") or origin,
            entry,
            is_async=is_async,
            max_duration=cls.max_duration,
            max_retries=cls.max_retries,
            origin=origin,
            schedule=cls.schedule,
            timezone=cls.timezone,
        )

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def start(
        cls,
        *args: Any,
        idempotency_key: str | None = None,
        app: Celery | None = None,
        **kwargs: Any,
    ) -> Any:
        """`start(this workflow, *args, ...)`: see `celery_durable.start`."""
        from .runs import start

        return start(cls, *args, idempotency_key=idempotency_key, app=app, **kwargs)
