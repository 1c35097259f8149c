"""The timer poller: a thread in every worker's main process.

At least every `durable_timer_poll_interval` seconds, and right when the
earliest timer is due, it claims the due timers (one Lua call; a claim leases
the timer so no other worker takes it), looks at their runs' status (one
round trip), sends the run task once per run that still waits for it, then
releases the timers. Its cost per poll is a range query on the
due end of a sorted set: it does not grow with the number of timers not yet
due. A worker that dies between claim and dispatch leaves leases that fire
again after `LEASE` seconds. Between polls it also runs the retention
sweep (`celery_durable.retention`), a bounded round now and then.

A timer whose run was sent is moved on, not removed (see timers/store.py):
should the message be lost, the run is sent again when it fires next, by
`durable_redispatch_after` or by how late the run already is, whichever is
longer; a run that moved on meanwhile drops it.
"""

from __future__ import annotations

import logging
import time

from ..background import Background
from ..extension import DurableExtension
from ..retention import RetentionSweep
from ..schedules.firing import fire_due_schedules
from ..timers.store import DEADLINE, DISPATCH, STEP, WAKE, ClaimedTimer
from .recovery import TIMER_CAUSES, Action, decide
from .step_task import fire_timers

logger = logging.getLogger("celery_durable.poller")

LEASE = 30.0
BATCH = 100

# The meta field that says since when the run waits, by timer kind.
_SINCE = {DISPATCH: "updated_at", WAKE: "wake_at", DEADLINE: "deadline_at"}


class TimerPoller(Background):
    def __init__(self, ext: DurableExtension, interval: float):
        super().__init__("timer poller", interval)
        self.ext = ext
        self.sweep = RetentionSweep(ext)

    def run_once(self) -> float:
        """Poll, sweep now and then; wait until the next timer is due, at most `interval`."""
        claimed, next_due = self.poll_once()
        self.sweep.maybe_sweep()
        if claimed >= BATCH:  # a full batch: more are due, go on at once
            return 0.0
        if next_due is None:
            return self.interval
        return min(self.interval, max(0.0, next_due - self.ext.clock.now()))

    def poll_once(self) -> tuple[int, float | None]:
        """Claim and dispatch what is due: (runs woken, when the next timer is due)."""
        timers = self.ext.timers
        now = self.ext.clock.now()
        claimed, next_due = timers.claim(now, lease=LEASE, limit=BATCH)
        count = len(claimed)
        # schedule: members fire there, and move on to their next ticks.
        claimed, next_tick = fire_due_schedules(self.ext, claimed)
        if next_tick is not None and (next_due is None or next_tick < next_due):
            next_due = next_tick
        steps = [timer for timer in claimed if timer.kind == STEP]
        if steps:  # dispatched steps' retries and safety nets: see step_task.py
            fire_timers(self.ext, steps, now)
            claimed = [timer for timer in claimed if timer.kind != STEP]
        if not claimed:
            return count, next_due
        metas = self._metas(claimed)
        sent: set[str] = set()
        done: list[ClaimedTimer] = []
        recheck_at: dict[str, float] = {}
        try:
            for timer in claimed:
                meta = metas[timer.run_id]
                cause = TIMER_CAUSES.get(timer.kind)
                if cause is None or decide(cause, meta).action is not Action.DISPATCH:
                    done.append(timer)  # the run moved on, or ended: nothing to send
                    continue
                if timer.run_id not in sent:  # its wake and deadline may fall together
                    self.ext.dispatch(timer.run_id)
                    sent.add(timer.run_id)
                done.append(timer)
                recheck_at[timer.member] = now + self._recheck_after(timer.kind, meta, now)
        finally:  # what was sent or not wanted is done; the rest fires again after its lease
            timers.release(done, recheck_at)
        return count, next_due

    def _metas(self, claimed: list[ClaimedTimer]) -> dict[str, dict[str, str]]:
        """Status and times of the runs of `claimed`, in one round trip."""
        run_ids = sorted({timer.run_id for timer in claimed})
        fields = ("status", *sorted(set(_SINCE.values())))
        pipe = self.ext.redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hmget(self.ext.keys.run_meta(run_id), *fields)
        return {
            run_id: {f: v.decode() for f, v in zip(fields, values, strict=True) if v}
            for run_id, values in zip(run_ids, pipe.execute(), strict=True)
        }

    def _recheck_after(self, kind: str, meta: dict[str, str], now: float) -> float:
        """Seconds until a sent run is looked at again: longer the later it already is."""
        since = meta.get(_SINCE[kind])
        late = 0.0
        if since:
            # updated_at is wall-clock; due times are on the (skippable) durable clock.
            late = (time.time() if kind == DISPATCH else now) - float(since)
        return max(self.ext.settings.redispatch_after, late)
