"""The timer poller: a thread in every worker's main process.

At least every `durable_timer_poll_interval` seconds, and right when the
earliest timer is due, it claims the due timers (one Lua call; a claim leases
the timer so no other worker takes it) and sends the run task once per run,
then releases them. Its cost per poll is a range query on the
due end of a sorted set: it does not grow with the number of timers not yet
due. A worker that dies between claim and dispatch leaves leases that fire
again after `LEASE` seconds. Between polls it also runs the retention
sweep (`celery_durable.retention`), a bounded round now and then.
"""

from __future__ import annotations

import logging
import threading

from ..extension import DurableExtension
from ..retention import RetentionSweep
from ..schedules.firing import fire_due_schedules

logger = logging.getLogger("celery_durable.poller")

LEASE = 30.0
BATCH = 100


class TimerPoller:
    def __init__(self, ext: DurableExtension, interval: float):
        self.ext = ext
        self.interval = interval
        self.sweep = RetentionSweep(ext)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name="celery_durable-timers", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poll_once(self) -> tuple[int, float | None]:
        """Claim and dispatch what is due: (runs woken, when the next timer is due)."""
        timers = self.ext.timers
        claimed, next_due = timers.claim(self.ext.clock.now(), lease=LEASE, limit=BATCH)
        # schedule: members fire there, and move on to their next ticks.
        runs, next_tick = fire_due_schedules(self.ext, claimed)
        if next_tick is not None and (next_due is None or next_tick < next_due):
            next_due = next_tick
        sent: set[str] = set()
        try:
            for timer in runs:
                if timer.run_id not in sent:  # its wake and deadline may fall together
                    self.ext.dispatch(timer.run_id)
                    sent.add(timer.run_id)
        finally:  # what was sent is done; the rest fires again when its lease ends
            timers.release([timer for timer in claimed if timer.run_id in sent])
        return len(claimed), next_due

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            wait = self.interval
            try:
                claimed, next_due = self.poll_once()
                self.sweep.maybe_sweep()
                failures = 0
                if claimed >= BATCH:  # a full batch: more are due, go on at once
                    continue
                if next_due is not None:
                    wait = min(wait, max(0.0, next_due - self.ext.clock.now()))
            except Exception as exc:  # Redis or broker away: keep trying, quietly
                failures += 1
                if failures == 1 or failures % 100 == 0:
                    logger.warning("timer poll failed (%d in a row): %r", failures, exc)
            self._stopping.wait(wait)
