"""The Celery task that executes (or resumes) one run.

Its message carries the run id and names the journal that holds the run:
arguments and history come from the journal, so a redelivered, duplicated
or late message is harmless. A message for another journal (apps that share
a queue but not a journal) goes to that journal's queue, see `journal_queue`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, Task

from ..errors import (
    DurableError,
    JournalConflictError,
    JournalCorruptError,
    WorkflowNotFoundError,
)
from ..extension import RUN_TASK_NAME, DurableExtension, extension_for
from ..journal.events import FINAL_STATUSES, Event, EventType, RunStatus
from ..journal.identity import JournalId
from ..workflows.blocking import block, retry_later
from ..workflows.execution import Execution, deadline_of, owner_of
from ..workflows.interruptions import Interrupted, is_interruption, persevere
from ..workflows.outcomes import finish
from ..workflows.registry import WorkflowDefinition, lookup
from ..workflows.replay import replay_history
from .journal_queue import forward, serves

logger = logging.getLogger("celery_durable.worker")


def register_run_task(app: Celery) -> None:
    @app.task(name=RUN_TASK_NAME, bind=True, acks_late=True, ignore_result=True, shared=False)
    def run_workflow(
        task: Task, run_id: str, takeover: str | None = None, journal: Any = None
    ) -> None:
        ext = extension_for(task.app)
        named = JournalId.from_message(journal)
        if named is not None and not serves(ext, named, run_id):
            forward(task, ext, named, run_id)
            return
        hostname = task.request.hostname or ""
        # Through Redis outages and out-of-memory spells: see workflows/interruptions.py.
        persevere(
            lambda owner: execute_run(ext, run_id, worker=hostname, takeover=owner),
            run_id,
            takeover,
        )


def execute_run(
    ext: DurableExtension, run_id: str, worker: str = "", takeover: str | None = None
) -> None:
    journal = ext.journal
    claimed = False
    try:
        if takeover is None:
            # A fresh run is claimed in the round trip that reads it.
            meta, events, claimed = _load_claiming(ext, run_id, worker)
        else:
            meta, events = journal.load(run_id)
    except JournalCorruptError as exc:
        meta = journal.meta(run_id)
        if meta and meta.get("status") not in FINAL_STATUSES:
            _fail(ext, run_id, meta, exc)
        return
    # A run claimed as it was read is fresh and this execution's (its status: running).
    if not claimed and _dropped(ext, run_id, meta, takeover):
        return
    try:
        if not events or events[0].type != EventType.WORKFLOW_STARTED:
            raise JournalCorruptError(
                f"run {run_id}: the journal does not begin with workflow.started"
            )
        definition = lookup(events[0].data["name"])
    except WorkflowNotFoundError as exc:  # a deploy removed it, or this worker is not updated
        _block(ext, run_id, meta, exc, worker=worker, claimed=claimed)
        return
    except DurableError as exc:  # claimed, it leaves this worker's list
        _fail(ext, run_id, meta, exc, worker=worker if claimed else None)
        return
    if meta.get("status") == RunStatus.BLOCKED and not _unblocked(ext, run_id, events, definition):
        return
    Execution(
        ext, run_id, events, definition, worker=worker, takeover=takeover, claimed=claimed
    ).run()


def _dropped(
    ext: DurableExtension, run_id: str, meta: dict[str, str], takeover: str | None
) -> bool:
    """Is this message not this worker's to execute? (Logged when so.)"""
    if not meta:
        logger.warning(
            "run %s does not exist in this worker's journal (%s); message dropped",
            run_id,
            ext.journal_id,
        )
        return True
    status = meta.get("status")
    if status in FINAL_STATUSES:
        logger.info("run %s is already %s; message dropped", run_id, status)
        return True
    if status == RunStatus.RUNNING and (takeover is None or meta.get("owner") != takeover):
        # Its execution is alive and will see whatever woke it (an inbox
        # entry, a due time) at its next wait; a dead one is taken over by
        # a message naming the dead owner, not by stray messages.
        logger.info("run %s is running elsewhere; message dropped", run_id)
        return True
    if status == RunStatus.SLEEPING and _not_yet_due(ext, meta):
        logger.info("run %s sleeps until its timer; message dropped", run_id)
        return True
    return False


def _load_claiming(
    ext: DurableExtension, run_id: str, worker: str
) -> tuple[dict[str, str], list[Any], bool]:
    """`Journal.load_claiming` with this execution's claim (see `Execution.run`).

    Redis trouble raises `Interrupted` naming this claim's owner: the claim
    may have landed, and the next try takes it over.
    """
    owner = owner_of(worker)
    executing = {"worker": worker, "pid": os.getpid(), "attempt": 1}
    try:
        return ext.journal.load_claiming(
            run_id,
            (EventType.WORKFLOW_EXECUTING, executing),
            meta={"owner": owner},
            worker_runs=ext.keys.worker_runs(worker),
        )
    except Exception as exc:
        if not is_interruption(exc):
            raise
        raise Interrupted(exc, owner) from None


def _unblocked(
    ext: DurableExtension, run_id: str, events: list[Event], definition: WorkflowDefinition
) -> bool:
    """May a blocked run execute here? Yes if its history replays (dry) or it is past its time.

    While it does not replay, nothing is written: its retry timer is set again.
    """
    deadline = deadline_of(definition, events[0])
    if deadline is None or ext.clock.now() < deadline:
        divergence = replay_history(ext, run_id, events, definition=definition)
        if divergence is not None:
            logger.info("run %s stays blocked: %s", run_id, divergence.message)
            retry_later(ext, run_id)
            return False
    logger.info("run %s was blocked; its history replays here: it goes on", run_id)
    ext.redis.srem(ext.keys.blocked_runs(), run_id)
    return True


def _block(
    ext: DurableExtension,
    run_id: str,
    meta: dict[str, str],
    exc: DurableError,
    worker: str,
    *,
    claimed: bool = False,
) -> None:
    """Block a run whose code is not here (or keep it blocked): another worker may have it.

    `claimed`: this worker claimed it as it read it (and filed it under itself).
    """
    if meta.get("status") == RunStatus.BLOCKED:
        logger.info("run %s stays blocked: %s", run_id, exc)
        retry_later(ext, run_id)
        return
    try:
        block(
            ext,
            run_id,
            int(meta.get("seq", 0)),
            exc,
            workflow_name=meta.get("name", ""),
            worker=worker if claimed else None,
        )
    except JournalConflictError:
        logger.info("run %s moved on meanwhile; leaving it to its owner", run_id)


def _not_yet_due(ext: DurableExtension, meta: dict[str, str]) -> bool:
    """A sleeping run with nothing due: neither its wake time nor its deadline."""
    now = ext.clock.now()
    wake_at, deadline_at = meta.get("wake_at"), meta.get("deadline_at")
    if not wake_at or now >= float(wake_at):
        return False
    return not deadline_at or now < float(deadline_at)


def _fail(
    ext: DurableExtension,
    run_id: str,
    meta: dict[str, str],
    exc: DurableError,
    worker: str | None = None,
) -> None:
    """End a run that cannot execute here, saying why; the worker carries on.

    `worker`: this worker claimed the run (it leaves the worker's list).
    """
    logger.error("run %s failed: %s", run_id, exc)
    try:
        finish(
            ext,
            run_id,
            int(meta.get("seq", 0)),
            EventType.WORKFLOW_FAILED,
            error=exc,
            parent=meta.get("parent"),
            workflow_name=meta.get("name", ""),
            worker=worker,
        )
    except JournalConflictError:
        logger.info("run %s moved on meanwhile; leaving it to its owner", run_id)
