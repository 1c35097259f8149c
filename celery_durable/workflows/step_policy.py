"""How a step is retried and where its task goes: the options of `@step`.

Its own module because the engine (`execution.py`, `fanout.py`) and the
worker's step task read it, and `steps.py`, which makes it from the
decorator's arguments, calls into the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RetryableError
from ..options import parse_duration


@dataclass(frozen=True)
class StepPolicy:
    name: str
    max_retries: int = 0
    retry_delay: float = 1.0
    backoff: float = 2.0
    max_retry_delay: float | None = None
    # Dispatched steps: where and how their Celery task is sent. `queue`
    # None: inline when called plainly; spawned, a task on the run's queue.
    queue: str | None = None
    routing_key: str | None = None
    priority: int | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None

    @property
    def dispatched(self) -> bool:
        """Does a plain call run the body as its own task (`@step(queue=...)`)?"""
        return self.queue is not None

    def delay_before(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait before attempt `attempt + 1`, after `attempt` failed."""
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return parse_duration(error.retry_after, field="RetryableError.retry_after") or 0.0
        delay = self.retry_delay * (self.backoff ** (attempt - 1))
        if self.max_retry_delay is not None:
            delay = min(delay, self.max_retry_delay)
        return delay
