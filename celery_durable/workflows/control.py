"""Acting on a run from outside: `send_event()` and cancellation.

`send_event()` delivers an inbox event: kept in the run's inbox until the
run's `wait_for_event()` takes it and records the history event
`event.received`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from ..errors import (
    DurableError,
    JournalConflictError,
    RunFinishedError,
    RunNotFoundError,
    WorkflowCancelledError,
)
from ..extension import DurableExtension, extension_for
from ..journal.events import FINAL_STATUSES, EventType, RunStatus
from ..limits import encode_bounded
from .outcomes import finish_from_meta


def send_event(run_id: str, name: str, payload: Any = None, *, app: Celery | None = None) -> None:
    """Deliver an event to a run; it is kept until the run waits for `name`.

    Raises `RunNotFoundError` for an unknown run, `RunFinishedError` for a run
    that has ended, `EncodingError` for a payload that cannot be recorded or
    is over `durable_max_payload_bytes` encoded.
    """
    deliver(extension_for(app), run_id, name, payload)


def deliver(
    ext: DurableExtension, run_id: str, name: str, payload: Any, *, send_id: str | None = None
) -> bool:
    """`send_event()` in the journal of `ext`; False if `send_id` was delivered before."""
    if not isinstance(name, str) or not name or name.startswith("child:"):
        raise ValueError(
            f"send_event(): the event name must be a non-empty string not starting with "
            f"'child:', got {name!r}"
        )
    data = encode_bounded(
        payload,
        ext.settings.max_payload_bytes,
        what=f"send_event({run_id!r}, {name!r}): payload",
    )
    status, waiting_for, fresh = ext.journal.send(run_id, name, data, send_id=send_id)
    if not status:
        raise RunNotFoundError(f"no run with id {run_id!r}")
    if status in FINAL_STATUSES:
        raise RunFinishedError(
            f"run {run_id} is {status}; events can only be sent to unfinished runs"
        )
    if status == RunStatus.WAITING and waiting_for == name:
        ext.wake(run_id)  # the event is recorded: a message lost now is sent again
    return fresh


def cancel_run(run_id: str, *, app: Celery | None = None) -> bool:
    """End a run as `cancelled`; False if it had already finished.

    A run that is not executing (pending, sleeping, waiting) is cancelled at
    once and its timers are dropped; a running one is asked to stop and ends at
    its next step boundary. `RunHandle.cancel()` does the same.
    """
    return cancel(extension_for(app), run_id)


def cancel(ext: DurableExtension, run_id: str) -> bool:
    """`cancel_run()` in the journal of `ext`."""
    for _ in range(100):  # each loop is a race lost to the run's own writes
        meta = ext.journal.meta(run_id)
        if not meta:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        status, position = meta["status"], int(meta["seq"])
        if status in FINAL_STATUSES:
            return False
        try:
            if status == RunStatus.RUNNING:
                ext.journal.append(run_id, position, [], meta={"cancel_requested": "1"})
            else:
                cancelled = WorkflowCancelledError(f"run {run_id} was cancelled")
                finish_from_meta(ext, run_id, meta, EventType.WORKFLOW_CANCELLED, cancelled)
            return True
        except JournalConflictError:
            continue
    raise DurableError(f"run {run_id} kept changing; could not cancel it, try again")
