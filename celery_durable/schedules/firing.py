"""Firing due schedules: what the timer poller does with `schedule:<name>` members.

The poller claims due timers under a lease (one Lua call; of several
workers exactly one gets each member) and hands the schedule members here.
For each one, firing reads the schedule, works out which ticks are due
(`catch_up` decides what happens to ticks missed while no worker ran),
starts one run per tick to run (`overlap="skip"` skips a tick while the
schedule's previous run is unfinished), then records the outcome and the
next tick with a write fenced on the tick it read, and moves the member to
the next tick unless it was set again since the claim.

Exactly one run per tick: the run's idempotency key is the schedule's name
and the tick, so should a lease run out and a second worker fire the same
tick, it finds the run already there (and its fenced write loses).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..journal.events import FINAL_STATUSES
from ..workflows.runs import create_run
from .model import ScheduleSpec, ScheduleState
from .store import SCHEDULE, Advance, schedule_store
from .timing import to_datetime, to_ms

if TYPE_CHECKING:
    from ..extension import DurableExtension
    from ..timers.store import ClaimedTimer

logger = logging.getLogger("celery_durable.schedules")

CATCH_UP_LIMIT = 1000  # catch_up="all" runs at most this many of the latest missed ticks
FIRE_BATCH = 100  # ticks of one schedule fired per claim; the rest on the next poll
# Schedules fired per round by one poller. A poll may claim up to 100 due
# timers; in a burst (many schedules on one tick) the excess goes straight
# back, due, so that the other workers' pollers share the burst.
ROUND = 20


def tick_key(name: str, tick: int) -> str:
    """The idempotency key of a tick's run: the schedule's name and the tick (UTC)."""
    return f"schedule:{name}:{to_datetime(tick).isoformat(timespec='milliseconds')}"


def fire_due_schedules(
    ext: DurableExtension, claimed: Sequence[ClaimedTimer]
) -> tuple[list[Any], float | None]:
    """Fire the claimed `schedule:` timers.

    Returns the other timers, for the poller to dispatch, and the earliest
    next tick set here (clock seconds), for it to wake up on time: the
    claim's own answer about the earliest timer saw these ones leased.
    Never raises: a schedule that cannot be fired now keeps its lease and is
    claimed again when the lease ends.
    """
    due = [timer for timer in claimed if timer.kind == SCHEDULE]
    if not due:
        return list(claimed), None
    earliest = None
    try:
        earliest = Firing(ext).fire(due)
    except Exception as exc:  # Redis or the broker away: the leases fire again
        logger.warning("firing %d schedule(s) failed: %r", len(due), exc)
    return [timer for timer in claimed if timer.kind != SCHEDULE], earliest


class Firing:
    """One round of firing, for the schedules claimed by one poll."""

    def __init__(self, ext: DurableExtension):
        self.ext = ext
        self.store = schedule_store(ext)
        self.worker = f"{socket.gethostname()}/{os.getpid()}"

    def fire(self, timers: Sequence[ClaimedTimer]) -> float | None:
        """Fire these schedules; the earliest tick their timers were moved to (seconds)."""
        now_s = self.ext.clock.now()
        now = to_ms(now_s)
        moves: list[tuple[ClaimedTimer, int | None]] = []
        put_back = len(timers) > ROUND
        if put_back:  # the rest goes back at once, due: any poller may take it
            self.store.move_timers([(timer, now) for timer in timers[ROUND:]])
            timers = timers[:ROUND]
        names = [timer.run_id for timer in timers]  # the member's part after "schedule:"
        advances: list[tuple[ClaimedTimer, Advance]] = []
        for timer, loaded in zip(timers, self.store.load_many(names), strict=True):
            if loaded is None:  # deleted since: drop its timer
                moves.append((timer, None))
                continue
            spec, state = loaded
            if state.paused or state.next_tick is None:
                moves.append((timer, None))
            elif state.next_tick > now:  # redefined or resumed since: not due yet
                moves.append((timer, state.next_tick))
            else:
                try:
                    advances.append((timer, self._fire_one(spec, state, now, now_s)))
                except Exception as exc:  # this one keeps its lease; the others go on
                    logger.warning("schedule %r: firing failed: %r", spec.name, exc)
        applied = self.store.advance_many([a for _, a in advances])
        for (timer, advance), ok in zip(advances, applied, strict=True):
            if ok:
                moves.append((timer, advance.next_tick))
        self.store.move_timers(moves)
        ticks = [tick for _, tick in moves if tick is not None]
        if put_back:
            ticks.append(now)
        return min(ticks) / 1000 if ticks else None

    def _fire_one(
        self, spec: ScheduleSpec, state: ScheduleState, now: int, now_s: float
    ) -> Advance:
        timing = spec.timing
        first = state.next_tick
        assert first is not None
        following = timing.next_after(first)
        if following is None or following > now:  # the usual case: one tick due
            due = [first]
        else:
            due = timing.latest(now, CATCH_UP_LIMIT, since=first) or [first]
        # Ticks before due[0] (beyond the catch-up limit) are missed as well;
        # they can be counted only for intervals.
        cut = due[0] > first
        dropped = (due[0] - first) // timing.every_ms if cut and timing.every_ms else 0
        later: list[int] = []
        if spec.catch_up == "all":
            run, missed, later = due[:FIRE_BATCH], [], due[FIRE_BATCH:]
        elif spec.catch_up == "latest" or now - due[-1] <= self.ext.settings.schedule_grace * 1000:
            run, missed = due[-1:], due[:-1]
        else:  # "none", and even the latest due tick is past the grace: run nothing
            run, missed = [], due
        next_tick: int | None
        if later:
            next_tick = later[0]
        elif due[-1] == first:
            next_tick = following
        else:
            next_tick = timing.next_after(due[-1])

        entries: list[dict[str, Any]] = []
        counters = {"runs": 0, "skipped": 0, "missed": 0}
        fields: dict[str, str] = {}
        if missed or cut:
            count = len(missed) + dropped
            counters["missed"] += count
            entries.append(
                {
                    "tick": first,
                    "last_tick": missed[-1] if missed else None,
                    "outcome": "missed",
                    "count": count,
                    "more": cut and not timing.every_ms,  # a cron's cut ticks were not counted
                    "reason": f"catch_up={spec.catch_up}",
                    "at": now_s,
                    "worker": self.worker,
                }
            )
        last_run = state.last_run_id
        for tick in run:
            entry: dict[str, Any] = {"tick": tick, "at": now_s, "worker": self.worker}
            if spec.overlap == "skip" and last_run and self._unfinished(last_run):
                entry.update(outcome="skipped", reason="overlap", run_id=last_run)
                counters["skipped"] += 1
            else:
                run_id, created = create_run(
                    self.ext,
                    spec.workflow,
                    list(spec.args),
                    dict(spec.kwargs),
                    tick_key(spec.name, tick),
                    started={"schedule": spec.name, "scheduled_at": to_datetime(tick)},
                )
                entry.update(outcome="started", run_id=run_id)
                if not created:
                    entry["note"] = "already started"
                counters["runs"] += 1
                last_run = run_id
                fields["last_run_id"] = run_id
            entries.append(entry)
            fields.update(
                last_tick=str(tick), last_outcome=entry["outcome"], last_fired_at=repr(time.time())
            )
        if not run and missed:
            fields.update(last_tick=str(missed[-1]), last_outcome="missed")
        return Advance(
            name=spec.name,
            expected=state.next_tick_raw,
            next_tick=next_tick,
            set_fields=fields,
            counters={k: v for k, v in counters.items() if v},
            entries=entries,
        )

    def _unfinished(self, run_id: str) -> bool:
        status = self.ext.journal.status(run_id)
        return status is not None and status not in FINAL_STATUSES
