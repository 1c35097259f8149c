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

import contextlib
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
CHECK_INTERVAL = 2.0  # seconds between two looks at the journal's queue


class JournalQueueStep(bootsteps.StartStopStep):
    """Consumes the worker's journal queue once run messages wait there.

    A consumer step, started after the task consumer. Every
    `CHECK_INTERVAL` seconds (and at once: messages may have waited since
    before this worker started) it asks the broker how many messages the
    journal's queue holds, over a connection of its own; when there are
    some, it adds the queue to the task consumer, as Celery's `add_consumer`
    control does, and consumes it from then on (again after a reconnect).
    Until then nothing changes: `app.amqp.queues` stays as configured and
    `inspect active_queues` shows the usual queues (Celery's own
    integration suite checks both).
    """

    label = "celery_durable journal queue"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any):
        super().__init__(c, **kwargs)
        self.consuming = False
        self._connection: Any = None
        self._channel: Any = None
        self._timer: Any = None

    def start(self, c: Any) -> None:
        self.queue = journal_queue(extension_for(c.app).journal_id)
        if self.consuming:  # a restarted consumer: carry on where it was
            self._consume(c)
            return
        self._timer = c.timer.call_repeatedly(CHECK_INTERVAL, self._check, (c,))
        self._check(c)

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close()

    shutdown = stop

    def _check(self, c: Any) -> None:
        if self.consuming:
            return
        try:
            if self._connection is None:
                # A connection of its own, opened with one try (not the default
                # channel's retries): a check must never hold the event loop.
                self._connection = c.app.connection_for_read()
                self._channel = self._connection.channel()
            waiting = self.queue(self._channel).queue_declare().message_count
        except Exception as exc:  # the broker is away: the next check tries again
            logger.debug("could not look at queue %s: %r", self.queue.name, exc)
            self._close()
            return
        if waiting:
            self.consuming = True
            logger.warning(
                "%d run message(s) of this worker's journal were forwarded to queue %r "
                "by workers of other journals; consuming it from now on",
                waiting,
                self.queue.name,
            )
            c.call_soon(self._consume, c)  # the consumer's own thread adds the queue

    def _consume(self, c: Any) -> None:
        consumer = c.task_consumer
        if consumer is not None and not consumer.consuming_from(self.queue.name):
            consumer.add_queue(self.queue)
            consumer.consume()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close()

    def _close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing more to do
                self._connection.release()
            self._connection = self._channel = None


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
