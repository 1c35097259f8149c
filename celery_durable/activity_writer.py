"""Writing activities to the global stream off the hot path, in batches.

An activity about a failed task is produced inside the task's pool process;
writing it to Redis there would add a round trip to every failure.
Activities are queued in memory instead and written by a background
thread, many per round trip. A process that exits flushes what is left; one
that is killed loses the activities of its last few milliseconds, which
only the stream (a record for people and dry runs) would have held: rule
actions are queued synchronously, before the activity is handed here.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import deque

from .activity import Activity
from .background import Background
from .redis_client import RedisClient

logger = logging.getLogger("celery_durable.events")

BATCH = 200
FLUSH_EVERY = 0.05  # seconds: a burst of activities costs one round trip per this


class ActivityWriter(Background):
    """Writes activities to the stream `key`, trimmed to about `maxlen` entries.

    Its thread starts on first use in each process (a forked pool child
    inherits the writer, not the thread), and writes every `FLUSH_EVERY`
    seconds, or at once when a batch is full; Redis away, the queue keeps
    the activities for the next round.
    """

    def __init__(self, client: RedisClient, key: str, maxlen: int):
        super().__init__("activity writer", FLUSH_EVERY)
        self.client = client
        self.key = key
        self.maxlen = maxlen
        self._queue: deque[Activity] = deque()
        self._lock = threading.Lock()
        self._pid: int | None = None

    def add(self, activity: Activity) -> None:
        if self._pid != os.getpid():  # first use, or a forked child: threads did not follow
            self._start()
        self._queue.append(activity)
        if len(self._queue) >= BATCH:
            self.wake()

    def flush(self) -> int:
        """Write everything queued now; how many were written."""
        written = 0
        with self._lock:
            while self._queue:
                pipe = self.client.pipeline(transaction=False)
                count = 0
                while self._queue and count < BATCH:
                    activity = self._queue.popleft()
                    pipe.xadd(
                        self.key, {"e": activity.encode()}, maxlen=self.maxlen, approximate=True
                    )
                    count += 1
                pipe.execute()
                written += count
        return written

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._queue = deque()  # a parent's queue is the parent's to write
            self._pid = os.getpid()
            self.start()
            atexit.register(self._flush_at_exit)

    def run_once(self) -> None:
        if self._queue:
            self.flush()

    def _flush_at_exit(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # Redis away: what is left is lost with the process
            logger.warning("could not write %d activities to the stream: %r", len(self._queue), exc)
