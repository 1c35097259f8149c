"""Run messages of another journal: forwarded to that journal's own queue.

Apps that share a broker queue but not a journal (two `durable_key_prefix`es
on one broker, or a client and workers that disagree on `durable_redis_url`)
receive each other's run messages. A worker must never drop one: it forwards
the message to the queue of the journal the message names
(`JournalId.queue`), which every worker of that journal consumes besides its
usual queues (`JournalQueueStep`, a consumer bootstep). One hop, no loop: a message whose journal
has no worker yet waits there until one starts.

Why not give the message back to its queue: kombu's Redis transport requeues
a rejected message by pushing it back onto the same list, so a worker alone
with foreign messages would spin on them; re-publishing with a countdown
does not spread them either (a worker took back its own delayed message
every time, 24 times in a row, in a test with two apps on one queue).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Task, bootsteps
from kombu import Exchange, Queue

from ..extension import RUN_TASK_NAME, DurableExtension, extension_for
from ..journal.identity import JournalId

logger = logging.getLogger("celery_durable.worker")

MISMATCH_LOG_INTERVAL = 60.0


class JournalQueueStep(bootsteps.StartStopStep):
    """Consumes the worker's journal queue, besides the queues it was given.

    A consumer step, started after the task consumer (and again whenever the
    consumer restarts after a lost connection). It adds the queue to the
    task consumer only, as Celery's `add_consumer` control does, but leaves
    `app.amqp.queues` as the user configured it.
    """

    label = "celery_durable journal queue"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        queue = journal_queue(extension_for(c.app).journal_id)
        consumer = c.task_consumer
        if not consumer.consuming_from(queue.name):
            consumer.add_queue(queue)
            consumer.consume()


def journal_queue(journal: JournalId) -> Queue:
    """The queue as an object: senders need not have it configured (task_create_missing_queues)."""
    return Queue(journal.queue, Exchange(journal.queue, type="direct"), routing_key=journal.queue)


def serves(ext: DurableExtension, named: JournalId, run_id: str) -> bool:
    """Whether this worker's journal is the one the message names.

    Another key prefix is another journal, even on the same Redis. The same
    prefix with another Redis fingerprint may be one server under two URLs
    (`localhost` and `127.0.0.1`): the run being in this journal settles it.
    """
    own = ext.journal_id
    if named == own:
        return True
    if named.prefix != own.prefix:
        return False
    return bool(ext.journal.status(run_id))


def forward(task: Task, ext: DurableExtension, named: JournalId, run_id: str) -> None:
    """Send the run's message to its journal's queue; this delivery is then acknowledged."""
    task.app.send_task(
        RUN_TASK_NAME,
        args=(run_id,),
        kwargs=dict(task.request.kwargs or {}),
        queue=journal_queue(named),
        ignore_result=True,
    )
    _mismatches.report(ext, named, run_id)


class Mismatches:
    """Says loudly that run messages of another journal came here: once per journal per interval."""

    def __init__(self, interval: float = MISMATCH_LOG_INTERVAL):
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[JournalId, float] = {}
        self._count: dict[JournalId, int] = {}

    def report(self, ext: DurableExtension, named: JournalId, run_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._count[named] = self._count.get(named, 0) + 1
            last = self._last.get(named)
            if last is not None and now - last < self.interval:
                return
            self._last[named] = now
            count, self._count[named] = self._count[named], 0
        logger.error(
            "run %s belongs to another journal (%s) than this worker's (%s at %s): "
            "forwarded to queue %r, which only workers of its journal consume "
            "(%d such message(s) since the last report). Apps that share a broker "
            "queue need the same durable_redis_url and durable_key_prefix, or queues "
            "of their own (task_default_queue or durable_queue).",
            run_id,
            named,
            ext.journal_id,
            ext.safe_redis_url,
            named.queue,
            count,
        )


_mismatches = Mismatches()
