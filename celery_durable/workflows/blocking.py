"""Blocked runs: history that the code here cannot replay, kept for a fix.

A deploy that changes a workflow so that a run's recorded history no longer
replays (`NonDeterminismError`), or removes the workflow from the workers
(`WorkflowNotFoundError`), does not end the run: it becomes `blocked`,
holding no worker. Its history stays as it was, so code that replays it
(with `patched()`, or the old code back) takes it on again:

- a wake timer tries it again every `durable_blocked_retry_after` seconds,
  by a dry replay first (`replay.py`), which writes nothing while it still
  diverges: a blocked run does not grow its history;
- a starting worker tries every blocked run (`retry_blocked_runs`);
- `celery durable runs resume RUN_ID` sends it at once; `runs fail RUN_ID`
  ends it as failed with the reason it was blocked for.

Blocking is published as the `workflow.blocked` activity, a rule trigger.
"""

from __future__ import annotations

import logging

from celery import Celery

from .. import failures
from ..errors import ConfigurationError, JournalConflictError, RunNotFoundError
from ..extension import DurableExtension, extension_for
from ..journal.events import EventType, RunStatus
from ..journal.journal import Appended
from .outcomes import finish_from_meta

logger = logging.getLogger("celery_durable.blocking")


def block(
    ext: DurableExtension,
    run_id: str,
    expected: int,
    error: BaseException,
    *,
    workflow_name: str = "",
    worker: str | None = None,
) -> Appended:
    """Make the run `blocked` at position `expected`; raises `JournalConflictError`."""
    described = failures.describe(error, limit=ext.settings.max_text_bytes)
    retry_at = ext.clock.now() + ext.settings.blocked_retry_after
    appended = ext.journal.append(
        run_id,
        expected,
        [(EventType.WORKFLOW_BLOCKED, {"error": described})],
        meta={"blocked_reason": described["message"], "wake_at": repr(retry_at)},
    )
    logger.warning("run %s is blocked: %s", run_id, error)
    # After the append, not with it: should it lose to another execution, the
    # timers are that one's. The deadline timer stays: a blocked run times out.
    pipe = ext.redis.pipeline(transaction=False)
    ext.timers.drop(run_id, deadline=False, pipe=pipe)
    ext.timers.schedule(run_id, wake_at=retry_at, pipe=pipe)
    pipe.sadd(ext.keys.blocked_runs(), run_id)
    if worker is not None:
        pipe.srem(ext.keys.worker_runs(worker), run_id)
    summary = {"run_id": run_id, "workflow_name": workflow_name, "error": described}
    ext.emit(EventType.WORKFLOW_BLOCKED, summary, pipe=pipe)
    for answer in pipe.execute(raise_on_error=False):
        if isinstance(answer, Exception):
            logger.warning("run %s blocked; tidying up after it failed: %r", run_id, answer)
    return appended


def retry_later(ext: DurableExtension, run_id: str) -> None:
    """A blocked run still does not replay here: try again after `durable_blocked_retry_after`."""
    ext.timers.schedule(run_id, wake_at=ext.clock.now() + ext.settings.blocked_retry_after)


RETRY_AT_START = 1000  # blocked runs a starting worker sends at most; timers cover the rest


def retry_blocked_runs(ext: DurableExtension, limit: int = RETRY_AT_START) -> int:
    """Send blocked runs once (a worker starts: it may have the code they need).

    At most `limit`, picked at random: after a bad deploy there may be many,
    and every worker of a rolling restart starts; the others are tried by
    their own retry timers (`durable_blocked_retry_after`). Returns how many
    were sent; ids of runs no longer blocked are dropped from the set.
    """
    key = ext.keys.blocked_runs()
    run_ids = [_text(member) for member in ext.redis.srandmember(key, limit) or ()]
    if not run_ids:
        return 0
    pipe = ext.redis.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hget(ext.keys.run_meta(run_id), "status")
    sent = 0
    for run_id, status in zip(run_ids, pipe.execute(), strict=True):
        if status == RunStatus.BLOCKED.encode():
            ext.dispatch(run_id)
            sent += 1
        else:
            ext.redis.srem(key, run_id)
    return sent


def resume_blocked(ext: DurableExtension, run_id: str) -> str:
    """Send a blocked run now; the worker replays it dry before it writes anything."""
    ext.dispatch(run_id)
    return (
        f"run {run_id} (blocked: {ext.journal.meta(run_id).get('blocked_reason', '?')}): "
        "sent to a worker; it goes on if its history replays under the worker's code, "
        "else stays blocked"
    )


def fail_run(run_id: str, *, app: Celery | None = None) -> str:
    """End a blocked run as failed, with the error it was blocked for."""
    ext = extension_for(app)
    for _ in range(100):  # each loop is a race lost to a worker trying it again
        meta = ext.journal.meta(run_id)
        if not meta:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        status = meta.get("status")
        if status != RunStatus.BLOCKED:
            raise ConfigurationError(
                f"run {run_id} is {status}, not blocked: `runs fail` ends only blocked runs "
                "(use `runs cancel` for others)"
            )
        last = ext.journal.last(run_id)
        error = failures.rebuild(last.data["error"]) if last and "error" in last.data else None
        if error is None:
            error = RuntimeError(meta.get("blocked_reason", "blocked"))
        try:
            finish_from_meta(ext, run_id, meta, EventType.WORKFLOW_FAILED, error)
        except JournalConflictError:
            continue
        ext.redis.srem(ext.keys.blocked_runs(), run_id)
        return f"run {run_id}: failed ({error})"
    raise ConfigurationError(f"run {run_id} kept changing; try again")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["block", "fail_run", "resume_blocked", "retry_blocked_runs", "retry_later"]
