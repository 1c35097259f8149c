"""What to do with a run that something may have left behind: one decision table.

A run moves on by a message (the run task) or by a timer. Several things can
take that away, each noticed in its own place, and each asks `decide()`:

- `PROCESS_LOST`: a pool process died under the run's task (`WorkerLostError`
  in the main process, `DurableWorkerStep._on_failure`);
- `TIME_LIMIT`: the task hit its hard time limit (`TimeLimitExceeded`, same);
- `WORKER_DEAD`: a worker that stopped beating had the run filed, or held
  its message (`WorkerMonitor.recover`);
- `MESSAGE_DROPPED`: this worker's consumer dropped the run's message
  unacknowledged (`WorkerMonitor.resend_dropped`);
- `UNEXECUTED`: the run is filed under this worker as running, but nothing
  here executes it (`WorkerMonitor.adopt_orphans`);
- `RESUME`: an operator sends on a run found stuck (`runs resume`,
  `workflows.stuck.resume_run`);
- `DISPATCH_TIMER`, `WAKE_TIMER`, `DEADLINE_TIMER`: one of the run's timers
  fired (`TimerPoller.poll_once`).

The decision, by the run's status (a run that is gone or finished is always
left alone, and so is one in a status not listed):

| cause             | pending       | sleeping, waiting  | running               |
|-------------------|---------------|--------------------|-----------------------|
| `PROCESS_LOST`    | dispatch      | dispatch (a)       | take over if gone (b) |
| `TIME_LIMIT`      | dispatch      | leave              | fail if gone          |
| `WORKER_DEAD`     | dispatch      | set timers (c)     | take over if gone (b) |
| `MESSAGE_DROPPED` | dispatch      | set timers (c)     | take over if (b)      |
| `UNEXECUTED`      | dispatch      | leave              | take over if gone     |
| `RESUME`          | dispatch, and | dispatch, and      | take over             |
|                   | dispatch timer| wake timer         |                       |
| `DISPATCH_TIMER`  | dispatch      | leave              | leave                 |
| `WAKE_TIMER`      | leave         | dispatch           | leave                 |
| `DEADLINE_TIMER`  | dispatch      | dispatch           | leave                 |

A `blocked` run (`workflows/blocking.py`) is dispatched by its wake timer (a
retry every `durable_blocked_retry_after`) and its deadline timer, and left
alone by every other cause: it holds no worker and no message.

(a) the message that woke it died with the process. (b) or if the lost
message was itself a takeover of the run's current owner: it died before its
claim, and the gone owner is still on record. (c) its wake and deadline
timers, at the due times of its meta: its worker may have died before it set
them, and a held wake-up message is covered by a wake timer due already.

"If gone": the run's recorded owner is known to execute it no more, a fact
the caller establishes, differently per cause: for `PROCESS_LOST` and
`TIME_LIMIT` the owner is a process of this worker that no longer exists; for
`WORKER_DEAD` a process of the dead worker; for `UNEXECUTED` a process of this
worker (whose run no request here executes, seen twice); for `RESUME` the run
is stuck (`workflows.stuck.stuck_reason`, checked before). A takeover is the
only message that may execute a run left `running` (see `run_task.py`); the
journal's fence makes a redundant takeover harmless, and a redundant dispatch.

`decide()` reads and writes nothing: the table is tested without Redis
(`tests/test_recovery_decisions.py`). `recover_run()` reads a run's meta,
decides and carries the decision out: the worker's paths call it. The poller
and `runs resume`, which read meta their own way, call `decide()` (and
`carry_out()`).

Adding a cause (for instance the step tasks a dead worker held): a `Cause`
member, its row in `decide()` and in this table, its rows in the test table,
and a call to `recover_run()` where it is noticed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from billiard.exceptions import WorkerLostError
from celery.exceptions import TimeLimitExceeded

from ..extension import DurableExtension
from ..journal.events import FINAL_STATUSES, EventType, RunStatus
from ..timers.store import DEADLINE, DISPATCH, WAKE
from ..workflows.outcomes import finish_from_meta


class Cause(StrEnum):
    """Why a run is looked at (see the module's table)."""

    PROCESS_LOST = "process_lost"
    TIME_LIMIT = "time_limit"
    WORKER_DEAD = "worker_dead"
    MESSAGE_DROPPED = "message_dropped"
    UNEXECUTED = "unexecuted"
    RESUME = "resume"
    DISPATCH_TIMER = "dispatch_timer"
    WAKE_TIMER = "wake_timer"
    DEADLINE_TIMER = "deadline_timer"


class Action(StrEnum):
    LEAVE = "leave"  # nothing to do: it moved on, ended, or something else moves it
    DISPATCH = "dispatch"  # send the run task
    TAKE_OVER = "take_over"  # send the run task naming the gone owner (`Decision.takeover`)
    FAIL = "fail"  # end the run as failed, with the cause's error
    SET_TIMERS = "set_timers"  # put back its timers (`Decision.timers`); they send it when due


@dataclass(frozen=True)
class Decision:
    """What to do with one run.

    `timers` names the timer kinds to set before the action: a wake or
    deadline timer at the run's own due time from its meta (a wake timer
    with no due time recorded: now), a dispatch timer at
    `durable_redispatch_after` from now.
    """

    action: Action
    takeover: str | None = None
    timers: tuple[str, ...] = ()


LEAVE = Decision(Action.LEAVE)
DISPATCH_NOW = Decision(Action.DISPATCH)

# The fired timer's cause, by timer kind; and the statuses in which a run
# still waits for what a timer of that cause sends.
TIMER_CAUSES = {
    DISPATCH: Cause.DISPATCH_TIMER,
    WAKE: Cause.WAKE_TIMER,
    DEADLINE: Cause.DEADLINE_TIMER,
}
_WAITS_FOR = {
    Cause.DISPATCH_TIMER: frozenset({RunStatus.PENDING}),
    Cause.WAKE_TIMER: frozenset({RunStatus.SLEEPING, RunStatus.WAITING, RunStatus.BLOCKED}),
    Cause.DEADLINE_TIMER: frozenset(
        {RunStatus.PENDING, RunStatus.SLEEPING, RunStatus.WAITING, RunStatus.BLOCKED}
    ),
}
_SUSPENDED = frozenset({RunStatus.SLEEPING, RunStatus.WAITING})


def decide(
    cause: Cause,
    meta: Mapping[str, str],
    *,
    takeover: str | None = None,
    owner_gone: bool = False,
) -> Decision:
    """The module's table: what to do with a run with this `meta`, for this `cause`.

    `takeover` is the owner named by the lost message, when it was a
    takeover; `owner_gone` whether the run's recorded owner is known to
    execute it no more (what that means per cause: see the module).
    """
    status = meta.get("status")
    if not status or status in FINAL_STATUSES:
        return LEAVE
    if cause in _WAITS_FOR:
        return DISPATCH_NOW if status in _WAITS_FOR[cause] else LEAVE
    if status == RunStatus.RUNNING:
        owner = meta.get("owner", "")
        if cause is Cause.TIME_LIMIT:  # running it again would hit the same limit
            return Decision(Action.FAIL) if owner_gone else LEAVE
        if owner_gone or (takeover and takeover == owner):
            return Decision(Action.TAKE_OVER, takeover=owner)
        return LEAVE  # its owner executes it, or it was taken over already
    if status == RunStatus.PENDING:
        # Its message died unclaimed, or was never sent: a resend is harmless.
        if cause is Cause.RESUME:  # stuck: its dispatch timer is gone too
            return Decision(Action.DISPATCH, timers=(DISPATCH,))
        return DISPATCH_NOW
    if status not in _SUSPENDED:
        return LEAVE
    if cause is Cause.PROCESS_LOST:  # the message that woke it died with the process
        return DISPATCH_NOW
    if cause in (Cause.WORKER_DEAD, Cause.MESSAGE_DROPPED):
        # Its worker may have died before it set the timers; a held wake-up
        # message is covered by the wake timer, due already.
        timers = tuple(k for k, f in ((WAKE, "wake_at"), (DEADLINE, "deadline_at")) if meta.get(f))
        return Decision(Action.SET_TIMERS, timers=timers)
    if cause is Cause.RESUME:  # stuck: its wake timer is gone, and its due time likely past
        return Decision(Action.DISPATCH, timers=(WAKE,))
    return LEAVE  # TIME_LIMIT, UNEXECUTED: its timers move it on


def carry_out(
    ext: DurableExtension,
    run_id: str,
    meta: Mapping[str, str],
    decision: Decision,
    *,
    error: BaseException | None = None,
    worker: str = "",
) -> None:
    """Do what `decision` says; `error` is the run's error for `FAIL`.

    Raises what the journal or the broker raise (`JournalConflictError` when
    a failed run moved on meanwhile: someone else has it).
    """
    if decision.action is Action.LEAVE:
        return
    if decision.timers:
        now = ext.clock.now()
        due: dict[str, float] = {}
        if WAKE in decision.timers:
            due["wake_at"] = float(meta["wake_at"]) if meta.get("wake_at") else now
        if DEADLINE in decision.timers and meta.get("deadline_at"):
            due["deadline_at"] = float(meta["deadline_at"])
        if DISPATCH in decision.timers:
            due["dispatch_at"] = now + ext.settings.redispatch_after
        ext.timers.schedule(
            run_id,
            wake_at=due.get("wake_at"),
            deadline_at=due.get("deadline_at"),
            dispatch_at=due.get("dispatch_at"),
        )
    if decision.action is Action.DISPATCH:
        ext.dispatch(run_id)
    elif decision.action is Action.TAKE_OVER:
        ext.dispatch(run_id, takeover=decision.takeover)
    elif decision.action is Action.FAIL:
        if error is None:
            raise ValueError(f"run {run_id}: failing it needs the error")
        finish_from_meta(ext, run_id, meta, EventType.WORKFLOW_FAILED, error, worker=worker)


def recover_run(
    ext: DurableExtension,
    run_id: str,
    cause: Cause,
    *,
    takeover: str | None = None,
    owner_gone: Callable[[str], bool] = lambda owner: False,
    error: BaseException | None = None,
    worker: str = "",
) -> Decision:
    """Read the run's meta, decide, carry the decision out; return it.

    `owner_gone(owner)` answers for a running run's recorded owner; it is
    asked only then (it may look at processes or Redis).
    """
    meta = ext.journal.meta(run_id)
    gone = meta.get("status") == RunStatus.RUNNING and owner_gone(meta.get("owner", ""))
    decision = decide(cause, meta, takeover=takeover, owner_gone=gone)
    carry_out(ext, run_id, meta, decision, error=error, worker=worker)
    return decision


def pool_cause(exception: BaseException | None) -> Cause | None:
    """The cause a run task's failure in the worker's main process stands for, if any."""
    if isinstance(exception, WorkerLostError):
        return Cause.PROCESS_LOST
    if isinstance(exception, TimeLimitExceeded):
        return Cause.TIME_LIMIT
    return None


def owned_by(owner: str, worker: str) -> bool:
    """Is `owner` (`hostname/pid`, as an execution claims a run) a process of `worker`?"""
    return bool(worker) and owner.startswith(f"{worker}/")


def process_gone(owner: str) -> bool:
    """Is the process of `owner` gone from this machine? False when that cannot be told."""
    try:
        os.kill(int(owner.rsplit("/", 1)[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, IndexError, ValueError):
        return False
    return False


__all__ = [
    "TIMER_CAUSES",
    "Action",
    "Cause",
    "Decision",
    "carry_out",
    "decide",
    "owned_by",
    "pool_cause",
    "process_gone",
    "recover_run",
]
