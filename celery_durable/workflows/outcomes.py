"""Ending a run: the one place a final event is written.

A run ends in its own execution (completed, failed, cancelled at a step
boundary, timed out), or from outside while it is not executing (cancelled
while it sleeps, timed out when its deadline timer fires, failed because it
cannot run here). Every path comes here, so every final event drops the run's
timers, notifies a parent run atomically, and is emitted for the rules.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .. import failures, signals
from ..codec import packb
from ..extension import DurableExtension
from ..journal.events import STATUS_AFTER, EventType
from ..journal.journal import Appended, Notification
from .dispatched import revoke_outstanding

logger = logging.getLogger("celery_durable.outcomes")


def child_event_name(run_id: str) -> str:
    """The inbox event by which a child run tells its parent it has ended."""
    return f"child:{run_id}"


def finish(
    ext: DurableExtension,
    run_id: str,
    expected: int,
    kind: EventType,
    *,
    result: Any = None,
    error: BaseException | None = None,
    parent: str | None = None,
    workflow_name: str = "",
    worker: str | None = None,
) -> Appended:
    """Append the final event `kind` at `expected`; raises JournalConflictError.

    `worker` is the worker whose execution ends the run: the run leaves its
    list of runs to take over.
    """
    data: dict[str, Any] = (
        {"result": result}
        if error is None
        else {"error": failures.describe(error, limit=ext.settings.max_text_bytes)}
    )
    notify = None
    if parent:
        payload = {"status": str(STATUS_AFTER[kind]), **data}
        notify = Notification(parent, child_event_name(run_id), packb(payload))
    appended = ext.journal.append(run_id, expected, [(kind, data)], notify=notify)
    pipe = ext.redis.pipeline(transaction=False)
    ext.timers.drop(run_id, pipe=pipe)
    pipe.delete(ext.keys.run_sent(run_id))  # no more sends to recognise
    if worker is not None:
        pipe.srem(ext.keys.worker_runs(worker), run_id)
    summary = {"run_id": run_id, "workflow_name": workflow_name, "error": data.get("error")}
    ext.emit(kind, summary, pipe=pipe)
    ext.step_records.outstanding(run_id, pipe=pipe)  # its steps still out, to revoke
    # The run has ended: what follows only tidies up and reports. A command
    # Redis refuses (the event stream's XADD when it is out of memory) is
    # logged, not raised as if the run had not ended.
    answers = pipe.execute(raise_on_error=False)
    for answer in answers:
        if isinstance(answer, Exception):
            logger.warning("run %s ended %s; tidying up after it failed: %r", run_id, kind, answer)
    steps = answers[-1]
    if steps and not isinstance(steps, Exception):
        revoke_outstanding(ext, run_id, str(STATUS_AFTER[kind]), steps)
    signals.send(
        signals.run_finished,
        ext.app,
        run_id=run_id,
        status=str(STATUS_AFTER[kind]),
        workflow_name=workflow_name,
    )
    if parent and appended.parent_waiting:
        ext.wake(parent)
    return appended


def finish_from_meta(
    ext: DurableExtension,
    run_id: str,
    meta: Mapping[str, str],
    kind: EventType,
    error: BaseException,
    *,
    worker: str | None = None,
) -> Appended:
    """`finish` for a run that no execution holds, read from its meta hash
    (position, parent, workflow): a recovery, a cancel, `runs fail`."""
    return finish(
        ext,
        run_id,
        int(meta["seq"]),
        kind,
        error=error,
        parent=meta.get("parent"),
        workflow_name=meta.get("name", ""),
        worker=worker,
    )


__all__ = ["EventType", "child_event_name", "finish", "finish_from_meta"]
