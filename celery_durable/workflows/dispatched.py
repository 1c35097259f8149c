"""The Celery messages of dispatched steps: sending them, again, and revoking them.

A step message carries only (run id, position, attempt) and the journal's
name; its task id is the one the run's record of the step names (`t:` in
`journal/steps.py`). The body's arguments come from the journal, so a
duplicated, redelivered or late message is harmless: only the message the
record names may run the step, once at a time.

Messages of one batch go out on one producer inside kombu's publish batch
(`Producer.batch()`, kombu 5.7): with the Redis broker that is one pipeline,
one round trip, whatever the number of steps; where the transport cannot
batch, kombu publishes them one by one on the one connection.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.client import Pipeline

    from ..extension import DurableExtension
    from ..journal.steps import StepState

logger = logging.getLogger("celery_durable.steps")

STEP_TASK_NAME = "celery_durable.run_step"

# Options of a step's message kept in its step.dispatched (a re-send by
# another worker, or by a timer, sends it exactly so).
MESSAGE_OPTIONS = ("queue", "routing_key", "priority", "time_limit", "soft_time_limit")


@dataclass(frozen=True)
class StepMessage:
    run_id: str
    position: int
    attempt: int
    task_id: str
    options: dict[str, Any] = field(default_factory=dict)


def new_task_id() -> str:
    return uuid.uuid4().hex


def message_options(dispatched: dict[str, Any]) -> dict[str, Any]:
    """The routing and limits of a step's messages, from its step.dispatched data."""
    options = dispatched.get("options") or {}
    return {k: options[k] for k in MESSAGE_OPTIONS if options.get(k) is not None}


def send(ext: DurableExtension, messages: Iterable[StepMessage]) -> None:
    """Publish step messages, all on one producer, batched where kombu can.

    Raises what the broker raises; callers that recorded the steps first
    (they have timers that send them again) log it instead.
    """
    messages = list(messages)
    if not messages:
        return
    app = ext.app
    journal = ext.journal_id.as_message()
    with app.producer_or_acquire() as producer:
        batch = getattr(producer, "batch", None)
        with batch() if batch is not None else contextlib.nullcontext():
            for message in messages:
                app.send_task(
                    STEP_TASK_NAME,
                    args=(message.run_id, message.position, message.attempt),
                    kwargs={"journal": journal},
                    task_id=message.task_id,
                    ignore_result=True,
                    producer=producer,
                    **message.options,
                )


def send_or_log(ext: DurableExtension, messages: list[StepMessage], why: str) -> None:
    """`send`, but a broker in trouble is logged: the steps' timers send them later."""
    try:
        send(ext, messages)
    except Exception as exc:
        logger.warning(
            "could not send %d step message(s) %s now (%r); their timers send them within %gs",
            len(messages),
            why,
            exc,
            ext.settings.redispatch_after,
        )


def schedule_timers(
    ext: DurableExtension, run_id: str, due: dict[int, float], pipe: Pipeline
) -> None:
    """Queue (in `pipe`) the `step:` timers of these positions at these due times."""
    if due:
        members = {ext.timers.step_member(run_id, p): when for p, when in due.items()}
        pipe.zadd(ext.keys.timers(), members)


def revoke_outstanding(
    ext: DurableExtension, run_id: str, status: str, records: dict[bytes, bytes] | None
) -> list[str]:
    """The run ended: revoke the messages of its steps that have no outcome.

    `records` is the run's record of dispatched steps (read in the same
    round trip as its end). A cancelled or timed-out run's running steps
    are terminated (SIGTERM to the pool process running the body); a run
    that completed or failed lets a running body finish (its outcome is
    kept, unused). Either way a message not yet started is discarded by
    the worker that gets it, and would find the run ended anyway. Returns
    the task ids revoked. Never raises: the run has ended.
    """
    from ..journal.steps import StepRecords

    if not records:
        return []
    outstanding: list[StepState] = StepRecords.parse_outstanding(records)
    if not outstanding:
        return []
    task_ids = [state.task_id for state in outstanding]
    terminate = status in ("cancelled", "timed_out")
    try:
        ext.redis.zrem(
            ext.keys.timers(), *(ext.timers.step_member(run_id, s.position) for s in outstanding)
        )
        ext.app.control.revoke(task_ids, terminate=terminate, signal="SIGTERM")
    except Exception as exc:
        logger.warning(
            "run %s ended %s; could not revoke its %d outstanding step(s): %r "
            "(they find the run ended when they start)",
            run_id,
            status,
            len(task_ids),
            exc,
        )
        return []
    logger.info(
        "run %s ended %s: revoked %d outstanding step(s)%s",
        run_id,
        status,
        len(task_ids),
        " (terminating running ones)" if terminate else "",
    )
    return task_ids
