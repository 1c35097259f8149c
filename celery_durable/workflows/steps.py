"""`@step`: a unit of work whose result is recorded once and replayed after.

A step runs inline in the workflow's task by default. With `queue=` its body
runs as its own Celery task on that queue (`workflows/fanout.py` dispatches
it, `worker/step_task.py` runs it); `.spawn()` starts any step that way
without waiting, `gather()` waits for several, `.map()` does both for every
item. Steps are registered by name so that the worker that gets a step's
message finds its code.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ..errors import ConfigurationError
from ..options import parse_count, parse_duration
from .context import current_execution
from .fanout import StepHandle, gather
from .step_policy import StepPolicy

F = TypeVar("F", bound=Callable[..., Any])


@overload
def step(fn: F, /) -> F: ...
@overload
def step(
    *,
    name: str | None = None,
    max_retries: int = 0,
    retry_delay: float | str = "1s",
    backoff: float = 2.0,
    max_retry_delay: float | str | None = None,
    queue: str | None = None,
    routing_key: str | None = None,
    priority: int | None = None,
    time_limit: float | str | None = None,
    soft_time_limit: float | str | None = None,
) -> Callable[[F], F]: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    max_retries: int = 0,
    retry_delay: float | str = "1s",
    backoff: float = 2.0,
    max_retry_delay: float | str | None = None,
    queue: str | None = None,
    routing_key: str | None = None,
    priority: int | None = None,
    time_limit: float | str | None = None,
    soft_time_limit: float | str | None = None,
) -> Any:
    """Make a function a durable step.

    Inside a workflow the step runs inline in the workflow's task, and its
    result is appended to the journal; when the run is executed again the
    recorded result is returned and the body does not run. Outside a workflow
    the function runs as if undecorated, which keeps unit tests simple.
    Failures are retried `max_retries` times, waiting `retry_delay *
    backoff**(n-1)` (capped by `max_retry_delay`) before retry n.

    With `queue=` the body runs as its own Celery task on that queue (with
    `routing_key`, `priority`, `time_limit` and `soft_time_limit` as Celery
    gives them to tasks): a plain call dispatches it and the run waits for
    it durably (in an `async def` workflow the call is awaited, and
    `asyncio.gather()` of such calls fans out). Any step also has
    `.spawn(*args, **kwargs)` (start it as a task without waiting; an inline
    step then goes to the run's queue) and `.map(iterable)` (one task per
    item, results in order).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        policy = _make_policy(
            func,
            name,
            max_retries,
            retry_delay,
            backoff,
            max_retry_delay,
            queue=queue,
            routing_key=routing_key,
            priority=priority,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
        )
        wrapper: Any
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                execution = current_execution.get()
                if execution is None:
                    return await func(*args, **kwargs)
                return await execution.fanout.call_async(policy, func, args, kwargs)

            wrapper = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                execution = current_execution.get()
                if execution is None:
                    return func(*args, **kwargs)
                if policy.dispatched and execution.is_async and not execution.inside_step():
                    # In an async def workflow a dispatched step is awaited, so
                    # that asyncio.gather(render(1), render(2)) fans out.
                    return execution.fanout.call_async(policy, func, args, kwargs)
                return execution.run_step(policy, func, args, kwargs)

            wrapper = sync_wrapper

        def spawn(*args: Any, **kwargs: Any) -> StepHandle:
            """Start the step as its own task without waiting; `gather()` the handle."""
            execution = current_execution.get()
            if execution is None or execution.inside_step():
                return _run_now(policy, func, args, kwargs)
            return execution.fanout.spawn(policy, args, kwargs)

        def map_(items: Iterable[Any]) -> list[Any]:
            """One task per item, all in parallel; their results in order (see `gather`)."""
            return gather(*(spawn(item) for item in items))

        wrapper.step_policy = policy
        wrapper.spawn = spawn
        wrapper.map = map_
        register_step(policy, func)
        return wrapper

    if fn is not None:
        return decorate(fn)
    return decorate


def _run_now(
    policy: StepPolicy, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> StepHandle:
    """Outside a workflow (or inside a step's body): run the step now, as a plain call."""
    try:
        value = func(*args, **kwargs)
        if inspect.iscoroutine(value):
            import asyncio

            value = asyncio.run(value)
    except Exception as exc:
        return StepHandle(policy.name, error=exc)
    return StepHandle(policy.name, value=value)


# -- the registry of steps by name ----------------------------------------------------


@dataclass(frozen=True)
class StepDefinition:
    policy: StepPolicy
    fn: Callable[..., Any]
    origin: str  # module.qualname of the code, to tell re-imports from clashes


_registry: dict[str, StepDefinition] = {}
_clashes: dict[str, set[str]] = {}


def register_step(policy: StepPolicy, fn: Callable[..., Any]) -> None:
    """File the step under its name, for the workers that get its messages.

    Two different functions under one name are an error only when one of
    them is dispatched (`lookup_step`): inline steps never needed a unique name.
    """
    origin = f"{fn.__module__}.{fn.__qualname__}"
    existing = _registry.get(policy.name)
    if existing is not None and existing.origin != origin:
        _clashes.setdefault(policy.name, {existing.origin}).add(origin)
    _registry[policy.name] = StepDefinition(policy, fn, origin)


def lookup_step(name: str) -> StepDefinition | None:
    """The step registered under `name` in this process; None if none is.

    Raises `ConfigurationError` when several functions were registered under it.
    """
    if name in _clashes:
        raise ConfigurationError(
            f"step name {name!r} is used by {', '.join(sorted(_clashes[name]))}; a dispatched "
            "step needs a name of its own: give one of them name=..."
        )
    return _registry.get(name)


def _make_policy(
    func: Callable[..., Any],
    name: str | None,
    max_retries: int,
    retry_delay: float | str,
    backoff: float,
    max_retry_delay: float | str | None,
    *,
    queue: str | None = None,
    routing_key: str | None = None,
    priority: int | None = None,
    time_limit: float | str | None = None,
    soft_time_limit: float | str | None = None,
) -> StepPolicy:
    step_name = name or func.__qualname__
    where = f"step {step_name!r}"
    if not isinstance(backoff, int | float) or isinstance(backoff, bool) or backoff < 1:
        raise ConfigurationError(f"{where}: backoff must be a number >= 1, got {backoff!r}")
    for label, value in (("queue", queue), ("routing_key", routing_key)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError(f"{where}: {label} must be a non-empty string, got {value!r}")
    if priority is not None and (
        not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 255
    ):
        raise ConfigurationError(
            f"{where}: priority must be an int from 0 to 255, got {priority!r}"
        )
    return StepPolicy(
        name=step_name,
        max_retries=parse_count(max_retries, field=f"{where}: max_retries"),
        retry_delay=parse_duration(retry_delay, field=f"{where}: retry_delay") or 0.0,
        backoff=float(backoff),
        max_retry_delay=parse_duration(max_retry_delay, field=f"{where}: max_retry_delay"),
        queue=queue,
        routing_key=routing_key,
        priority=priority,
        time_limit=parse_duration(time_limit, field=f"{where}: time_limit"),
        soft_time_limit=parse_duration(soft_time_limit, field=f"{where}: soft_time_limit"),
    )
