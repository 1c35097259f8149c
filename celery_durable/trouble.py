"""Redis or the broker in trouble: how long to wait, and how to say so.

Whatever meets the infrastructure's trouble (an execution, a background
thread, a worker waiting for Redis at start) waits with a capped, jittered
`backoff` and says so through `trouble_log`: one warning per kind of
trouble per process every `LOG_EVERY` seconds, with the count since the
last one and what the operator can do about it (`advice`). A Redis outage
then costs a few lines of log, not one per try of every thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from kombu.exceptions import OperationalError

from .errors import JournalConflictError, RedisAccessError
from .redis_client import is_out_of_memory, is_transient

logger = logging.getLogger("celery_durable.interruptions")

BACKOFF_BASE = 0.2  # seconds before the first new try
BACKOFF_CAP = 5.0  # at most this long between two tries
LOG_EVERY = 30.0  # seconds: one warning per kind of trouble per process, at most


def backoff(attempt: int) -> float:
    """Seconds to wait before try `attempt + 1` (0, 1, 2, ...), with jitter."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt) * random.uniform(0.5, 1.0)


def advice(error: BaseException) -> str:
    """What the operator can do about `error`."""
    if is_out_of_memory(error):
        return (
            "Redis is out of memory (maxmemory reached, policy noeviction): runs wait and go "
            "on when it has room. Raise maxmemory, free memory, or use maxmemory-policy "
            "volatile-ttl (finished runs expire first); never allkeys-*, which evicts journals"
        )
    if isinstance(error, RedisAccessError):
        return f"{error}; runs wait and go on once it is fixed"
    if isinstance(error, OperationalError):
        return "the broker is unreachable: runs wait and go on when it is back"
    if isinstance(error, JournalConflictError):
        return "Redis lost acknowledged writes; the run goes on from what its journal holds"
    if is_transient(error):
        return "the journal's Redis is unreachable: runs wait and go on when it is back"
    return "trying again"


class TroubleLog:
    """Logs each kind of trouble at most once per `LOG_EVERY` seconds, with advice."""

    def __init__(self, every: float = LOG_EVERY):
        self.every = every
        self._last: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def report(self, error: BaseException, where: str) -> bool:
        """Log `error` met in `where` unless one of its kind was logged lately."""
        kind = _kind(error)
        now = time.monotonic()
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            last = self._last.get(kind)
            if last is not None and now - last < self.every:
                return False
            self._last[kind] = now
            count, self._counts[kind] = self._counts[kind], 0
        logger.warning(
            "%s: %s: %s (%d time(s) lately). %s",
            where,
            type(error).__name__,
            error,
            count,
            advice(error),
        )
        return True


def _kind(error: BaseException) -> str:
    if isinstance(error, JournalConflictError):
        return "rewound"
    if is_out_of_memory(error):
        return "memory"
    if isinstance(error, RedisAccessError):
        return "access"
    if isinstance(error, OperationalError):
        return "broker"
    if is_transient(error):
        return "connection"
    return type(error).__name__


trouble_log = TroubleLog()
