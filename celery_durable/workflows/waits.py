"""`sleep()` and `wait_for_event()`: waiting inside a workflow without a worker.

Both are plain calls, also in `async def` workflows (no `await`): from the
workflow's point of view they return at once, either with what the journal
recorded or by suspending the run, which ends its Celery task.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError, NotInWorkflowError
from ..options import parse_duration
from .context import current_execution


def sleep(duration: float | str) -> None:
    """Suspend the run for `duration` ("30s", "2h", "7d" or seconds).

    The run's task ends (status `sleeping`) and any live worker resumes it when
    the timer is due; a sleep whose due time has passed on replay returns at once.
    """
    execution = current_execution.get()
    if execution is None:
        raise NotInWorkflowError(
            "sleep() can only be called inside a running workflow; use time.sleep() elsewhere"
        )
    if duration is None:  # not "no sleep": most likely a setting that was not found
        raise ConfigurationError(
            "sleep(duration): a duration is required, got None; pass seconds or a "
            "string such as '30s', '2h', '7d'"
        )
    seconds = parse_duration(duration, field="sleep(duration)")
    execution.sleep(seconds or 0.0)


def wait_for_event(name: str, timeout: float | str | None = None) -> Any:
    """Wait (status `waiting`) until `send_event(run_id, name, payload)`; return the payload.

    An event sent before the workflow waits for it is kept and returned when it
    does. With `timeout`, raises `EventTimeoutError` if none came in time; the
    workflow may catch it and go on.
    """
    execution = current_execution.get()
    if execution is None:
        raise NotInWorkflowError("wait_for_event() can only be called inside a running workflow")
    if not isinstance(name, str) or not name or name.startswith("child:"):
        raise ValueError(
            f"wait_for_event(): the event name must be a non-empty string not starting "
            f"with 'child:', got {name!r}"
        )
    seconds = parse_duration(timeout, field="wait_for_event(timeout)")
    return execution.wait_for_event(name, seconds)
