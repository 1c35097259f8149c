"""`@step`: a unit of work whose result is recorded once and replayed after."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ..errors import ConfigurationError, RetryableError
from ..options import parse_count, parse_duration
from .context import current_execution

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class StepPolicy:
    name: str
    max_retries: int = 0
    retry_delay: float = 1.0
    backoff: float = 2.0
    max_retry_delay: float | None = None

    def delay_before(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait before attempt `attempt + 1`, after `attempt` failed."""
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return parse_duration(error.retry_after, field="RetryableError.retry_after") or 0.0
        delay = self.retry_delay * (self.backoff ** (attempt - 1))
        if self.max_retry_delay is not None:
            delay = min(delay, self.max_retry_delay)
        return delay


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
) -> Any:
    """Make a function a durable step.

    Inside a workflow the step runs inline in the workflow's task, and its
    result is appended to the journal; when the run is executed again the
    recorded result is returned and the body does not run. Outside a workflow
    the function runs as if undecorated, which keeps unit tests simple.
    Failures are retried `max_retries` times, waiting `retry_delay *
    backoff**(n-1)` (capped by `max_retry_delay`) before retry n.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        policy = _make_policy(func, name, max_retries, retry_delay, backoff, max_retry_delay)
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                execution = current_execution.get()
                if execution is None:
                    return await func(*args, **kwargs)
                return await execution.run_step_async(policy, func, args, kwargs)

            async_wrapper.step_policy = policy  # type: ignore[attr-defined]
            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            execution = current_execution.get()
            if execution is None:
                return func(*args, **kwargs)
            return execution.run_step(policy, func, args, kwargs)

        wrapper.step_policy = policy  # type: ignore[attr-defined]
        return wrapper

    if fn is not None:
        return decorate(fn)
    return decorate


def _make_policy(
    func: Callable[..., Any],
    name: str | None,
    max_retries: int,
    retry_delay: float | str,
    backoff: float,
    max_retry_delay: float | str | None,
) -> StepPolicy:
    step_name = name or func.__qualname__
    where = f"step {step_name!r}"
    if not isinstance(backoff, int | float) or isinstance(backoff, bool) or backoff < 1:
        raise ConfigurationError(f"{where}: backoff must be a number >= 1, got {backoff!r}")
    return StepPolicy(
        name=step_name,
        max_retries=parse_count(max_retries, field=f"{where}: max_retries"),
        retry_delay=parse_duration(retry_delay, field=f"{where}: retry_delay") or 0.0,
        backoff=float(backoff),
        max_retry_delay=parse_duration(max_retry_delay, field=f"{where}: max_retry_delay"),
    )
