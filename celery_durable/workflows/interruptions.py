"""Redis or the broker in trouble under an execution: stop, wait, go on.

An execution that meets an error of the infrastructure (the journal's Redis
unreachable, restarting, loading its data or out of memory; the broker
unreachable) must not record it as the run's outcome, nor as a step's
failure: nothing is wrong with the run. It stops where it is by raising
`Interrupted` (a BaseException, so a workflow's `except Exception` cannot
swallow it), and the task that runs it waits with a capped backoff, without
bound, then executes the run again from its journal: recorded steps are
replayed, a step whose result was not recorded runs again (at least once,
as after a crash).

Why wait in the task instead of leaving the run to recovery: recovery acts
on dead workers, and this one is alive (its heartbeat comes back with
Redis). Waiting here resumes the run within about a second of Redis's
return, and holds nothing that Redis does not have: the run stays filed
under this worker, so if the worker is killed while it waits, its recovery
takes the run over like any other.

A journal found *behind* the position this execution wrote (Redis lost
acknowledged writes: a restart without fsync, a failover to a lagging
replica) is the same kind of trouble: the execution starts again from what
the journal holds, instead of taking the gap for another execution's work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kombu.exceptions import OperationalError

from ..errors import JournalConflictError, RedisAccessError, RedisOutOfMemoryError
from ..redis_client import is_out_of_memory, is_transient
from ..trouble import backoff, trouble_log


class Interrupted(BaseException):
    """The infrastructure failed under an execution; the run is to be executed again.

    `owner` is the owner (`hostname/pid`) this execution claimed the run as,
    so that the next try takes its own claim over; None before any claim.
    """

    def __init__(self, cause: BaseException, owner: str | None = None):
        super().__init__(repr(cause))
        self.cause = cause
        self.owner = owner


def is_interruption(error: BaseException) -> bool:
    """Is `error` the infrastructure's trouble rather than the run's?"""
    if isinstance(error, Interrupted):
        return True
    if is_transient(error) or is_out_of_memory(error):
        return True
    # A password changed or an ACL tightened under running workers: say so
    # loudly and wait for the fix rather than fail every run in flight.
    return isinstance(error, RedisAccessError | OperationalError)


def journal_failed(redis: Any, error: BaseException) -> bool:
    """Was `error`, raised by user code (a workflow's or a step's), the journal's Redis failing?

    Out-of-memory and access errors of the journal's client always are. A
    connection error may come from a service of the code's own, so Redis
    is asked (a PING, retried like any command for about half a minute).
    """
    if isinstance(error, RedisOutOfMemoryError | RedisAccessError):
        return True
    if not is_transient(error):
        return False
    try:
        redis.ping()
    except Exception:
        return True
    return False


def persevere(execute: Callable[[str | None], None], run_id: str, takeover: str | None) -> None:
    """Call `execute(takeover)` until it ends for another reason than Redis trouble.

    After an interruption, the next try takes over the claim the last one
    made (its owner): the run is still this process's to execute.
    """
    attempt = 0
    while True:
        try:
            execute(takeover)
            return
        except BaseException as exc:
            if not is_interruption(exc):
                raise
            cause = exc.cause if isinstance(exc, Interrupted) else exc
            if isinstance(exc, Interrupted) and exc.owner:
                takeover = exc.owner
        trouble_log.report(cause, f"run {run_id}: execution stopped until Redis takes its writes")
        if not isinstance(cause, JournalConflictError):  # a rewound journal: go on at once
            time.sleep(backoff(attempt))
            attempt += 1
