"""The timer poller: a thread in every worker's main process.

Every `durable_timer_poll_interval` seconds it claims the due timers (one Lua
call; a claim leases the timer so no other worker takes it) and sends the run
task for each, then releases them. Its cost per poll is a range query on the
due end of a sorted set: it does not grow with the number of timers not yet
due. A worker that dies between claim and dispatch leaves leases that fire
again after `LEASE` seconds.
"""

from __future__ import annotations

import logging
import threading

from ..extension import DurableExtension

logger = logging.getLogger("celery_durable.poller")

LEASE = 30.0
BATCH = 100


class TimerPoller:
    def __init__(self, ext: DurableExtension, interval: float):
        self.ext = ext
        self.interval = interval
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

    def poll_once(self) -> int:
        """Claim and dispatch what is due; how many runs were woken."""
        timers = self.ext.timers
        claimed = timers.claim(self.ext.clock.now(), lease=LEASE, limit=BATCH)
        for timer in claimed:
            self.ext.dispatch(timer.run_id)
        timers.release(claimed)
        return len(claimed)

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                woken = self.poll_once()
                failures = 0
            except Exception as exc:  # Redis or broker away: keep trying, quietly
                failures += 1
                if failures == 1 or failures % 100 == 0:
                    logger.warning("timer poll failed (%d in a row): %r", failures, exc)
                woken = 0
            if woken < BATCH:  # a full batch means more are due: go on at once
                self._stopping.wait(self.interval)
