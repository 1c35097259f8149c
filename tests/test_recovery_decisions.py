"""recovery.decide(): the decision table, as pure logic (no Redis, no worker).

Each row is (cause, the run's meta, the facts the caller knows) -> what to
do. tests/test_recovery.py, tests/test_restart.py and tests/faults/ check
that the paths carry these decisions out on real workers.
"""

from __future__ import annotations

import pytest
from billiard.exceptions import WorkerLostError
from celery.exceptions import TimeLimitExceeded

from celery_durable.timers.store import DEADLINE, DISPATCH, WAKE
from celery_durable.worker.recovery import (
    TIMER_CAUSES,
    Action,
    Cause,
    Decision,
    decide,
    owned_by,
    pool_cause,
    process_gone,
)

OWNER = "w1@host/4242"
LEAVE = Decision(Action.LEAVE)
DISPATCH_NOW = Decision(Action.DISPATCH)
TAKE_OVER = Decision(Action.TAKE_OVER, takeover=OWNER)
BOTH_TIMERS = Decision(Action.SET_TIMERS, timers=(WAKE, DEADLINE))

FINAL = ("completed", "failed", "cancelled", "timed_out")
SUSPENDED = ("sleeping", "waiting")
WORKER_CAUSES = (
    Cause.PROCESS_LOST,
    Cause.TIME_LIMIT,
    Cause.WORKER_DEAD,
    Cause.MESSAGE_DROPPED,
    Cause.UNEXECUTED,
    Cause.RESUME,
)
TIMERS = (Cause.DISPATCH_TIMER, Cause.WAKE_TIMER, Cause.DEADLINE_TIMER)


def meta(status: str, **fields: str) -> dict[str, str]:
    return {"status": status, "owner": OWNER, "seq": "3", **fields}


# (cause, status, takeover named by the lost message, owner gone) -> decision
TABLE = [
    # pending: its message died unclaimed, or was never sent
    *[(cause, "pending", None, False, DISPATCH_NOW) for cause in WORKER_CAUSES[:-1]],
    (Cause.RESUME, "pending", None, False, Decision(Action.DISPATCH, timers=(DISPATCH,))),
    # sleeping or waiting
    *[(Cause.PROCESS_LOST, s, None, False, DISPATCH_NOW) for s in SUSPENDED],
    *[(Cause.TIME_LIMIT, s, None, False, LEAVE) for s in SUSPENDED],
    *[(Cause.WORKER_DEAD, s, None, False, BOTH_TIMERS) for s in SUSPENDED],
    *[(Cause.MESSAGE_DROPPED, s, None, False, BOTH_TIMERS) for s in SUSPENDED],
    *[(Cause.UNEXECUTED, s, None, False, LEAVE) for s in SUSPENDED],
    *[(Cause.RESUME, s, None, False, Decision(Action.DISPATCH, timers=(WAKE,))) for s in SUSPENDED],
    # running, owner gone
    (Cause.PROCESS_LOST, "running", None, True, TAKE_OVER),
    (Cause.TIME_LIMIT, "running", None, True, Decision(Action.FAIL)),
    (Cause.WORKER_DEAD, "running", None, True, TAKE_OVER),
    (Cause.UNEXECUTED, "running", None, True, TAKE_OVER),
    (Cause.RESUME, "running", None, True, TAKE_OVER),
    # running, its owner alive (or not known gone): someone executes it
    *[(cause, "running", None, False, LEAVE) for cause in WORKER_CAUSES],
    # running, and the lost message was a takeover of its current owner
    (Cause.PROCESS_LOST, "running", OWNER, False, TAKE_OVER),
    (Cause.WORKER_DEAD, "running", OWNER, False, TAKE_OVER),
    (Cause.MESSAGE_DROPPED, "running", OWNER, False, TAKE_OVER),
    (Cause.TIME_LIMIT, "running", OWNER, False, LEAVE),  # the limit would hit it again
    # ... of another owner: taken over already by someone else
    *[
        (cause, "running", "w2@host/7", False, LEAVE)
        for cause in (Cause.PROCESS_LOST, Cause.WORKER_DEAD, Cause.MESSAGE_DROPPED)
    ],
    # timers: send the run only while it waits for what the timer sends
    (Cause.DISPATCH_TIMER, "pending", None, False, DISPATCH_NOW),
    *[(Cause.DISPATCH_TIMER, s, None, False, LEAVE) for s in (*SUSPENDED, "running")],
    *[(Cause.WAKE_TIMER, s, None, False, DISPATCH_NOW) for s in SUSPENDED],
    *[(Cause.WAKE_TIMER, s, None, False, LEAVE) for s in ("pending", "running")],
    *[(Cause.DEADLINE_TIMER, s, None, False, DISPATCH_NOW) for s in ("pending", *SUSPENDED)],
    (Cause.DEADLINE_TIMER, "running", None, True, LEAVE),
]


@pytest.mark.parametrize(("cause", "status", "takeover", "owner_gone", "expected"), TABLE)
def test_the_table(cause, status, takeover, owner_gone, expected):
    run = meta(status, wake_at="1234.5", deadline_at="9999.0")
    assert decide(cause, run, takeover=takeover, owner_gone=owner_gone) == expected


@pytest.mark.parametrize("cause", list(Cause))
@pytest.mark.parametrize("status", [*FINAL, None, "paused-by-a-newer-version"])
def test_a_run_that_is_gone_finished_or_in_an_unknown_status_is_left_alone(cause, status):
    run = {} if status is None else meta(status)
    assert decide(cause, run, takeover=OWNER, owner_gone=True) == LEAVE


@pytest.mark.parametrize("cause", list(Cause))
def test_a_blocked_run_is_sent_by_its_own_timers_only(cause):
    """Its wake timer is its retry; its deadline timer times it out. Nothing else moves it."""
    expected = DISPATCH_NOW if cause in (Cause.WAKE_TIMER, Cause.DEADLINE_TIMER) else LEAVE
    run = meta("blocked", wake_at="1234.5", deadline_at="9999.0")
    assert decide(cause, run, takeover=OWNER, owner_gone=True) == expected


@pytest.mark.parametrize("cause", [Cause.WORKER_DEAD, Cause.MESSAGE_DROPPED])
def test_only_the_timers_a_suspended_run_has_are_set_again(cause):
    assert decide(cause, meta("sleeping", wake_at="5.0")) == Decision(
        Action.SET_TIMERS, timers=(WAKE,)
    )
    assert decide(cause, meta("waiting", deadline_at="7.0", wake_at="")) == Decision(
        Action.SET_TIMERS, timers=(DEADLINE,)
    )
    assert decide(cause, meta("waiting")) == Decision(Action.SET_TIMERS)


def test_a_takeover_names_the_owner_on_record():
    decision = decide(Cause.WORKER_DEAD, meta("running", owner="w9@h/1"), owner_gone=True)
    assert decision == Decision(Action.TAKE_OVER, takeover="w9@h/1")


def test_every_cause_has_a_decision_for_every_status():
    statuses = ["pending", "running", *SUSPENDED, *FINAL]
    for cause in Cause:
        for status in statuses:
            for gone in (False, True):
                decision = decide(cause, meta(status), takeover=OWNER, owner_gone=gone)
                assert isinstance(decision.action, Action)
                assert (decision.action is Action.TAKE_OVER) == (decision.takeover is not None)


def test_timer_kinds_map_to_their_causes():
    assert TIMER_CAUSES == {
        DISPATCH: Cause.DISPATCH_TIMER,
        WAKE: Cause.WAKE_TIMER,
        DEADLINE: Cause.DEADLINE_TIMER,
    }
    assert set(TIMER_CAUSES.values()) == set(TIMERS)


def test_pool_failures_name_their_cause():
    assert pool_cause(WorkerLostError("gone")) is Cause.PROCESS_LOST
    assert pool_cause(TimeLimitExceeded(30)) is Cause.TIME_LIMIT
    assert pool_cause(ValueError("an ordinary failure")) is None
    assert pool_cause(None) is None


def test_owners_are_processes_of_a_worker():
    assert owned_by("w1@host/4242", "w1@host")
    assert not owned_by("w1@host2/4242", "w1@host")  # a prefix of another name
    assert not owned_by("", "w1@host") and not owned_by("w1@host/1", "")


def test_a_process_is_gone_only_when_the_system_says_so():
    import os
    import subprocess
    import sys

    assert not process_gone(f"me@here/{os.getpid()}")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid is free
    assert process_gone(f"me@here/{child.pid}")
    assert not process_gone("me@here/not-a-pid") and not process_gone("no-pid")
