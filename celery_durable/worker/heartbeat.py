"""This worker's heartbeat: that it is alive, and what it holds.

A thread in every worker's main process. Every `durable_heartbeat_interval`
(and promptly after a message arrives, so that a task received just before a
crash is on record) it scores this worker in the live-workers sorted set and
replaces its record of held messages (`holdings`): the raw messages of the
tasks it runs or has prefetched, run tasks among them. Other workers' monitors
(`monitor.py`) read the two when this one stops beating.

A clean stop signs off (nothing to recover). A warm shutdown goes on beating
until the worker holds nothing, so that a worker killed while it drains is
still recovered, with what it held.

After Redis was away (a beat failed), every worker's last beat is old:
`steady()` says no until beats went through for one `durable_worker_timeout`,
so that the monitor gives live workers the time to beat again before it
judges them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..background import Background
from ..extension import DurableExtension
from .holdings import Holdings, snapshot

logger = logging.getLogger("celery_durable.recovery")

SNAPSHOT_DEBOUNCE = 0.05  # seconds to let a burst of received messages land
DRAIN_CHECK = 0.05  # seconds between looks at a draining worker's holdings


class Heartbeat(Background):
    wait_first = True  # start() beats at once

    def __init__(self, ext: DurableExtension, hostname: str):
        super().__init__(f"worker {hostname}: heartbeat", ext.settings.heartbeat_interval)
        self.ext = ext
        self.hostname = hostname
        self.timeout = ext.settings.worker_timeout
        transport = ext.app.conf.broker_transport_options or {}
        self.holdings = Holdings(keep_for=float(transport.get("visibility_timeout", 3600)))
        self._touched = False  # a message arrived since the last beat
        self._draining = False
        self._in_trouble = False
        self._steady_after = 0.0  # monotonic: see steady()

    def start(self) -> None:
        self.beat()  # on record before the first task arrives
        super().start()

    def on_stopped(self) -> None:
        """The worker has stopped cleanly: sign off now."""
        self._sign_off()

    def stop_when_idle(self) -> None:
        """The worker is shutting down: go on beating until it holds nothing, then sign off."""
        self._draining = True
        self.wake()

    def touch(self, request: Any = None) -> None:
        """A message arrived: hold on to it, and write the record of held messages soon."""
        if request is not None:
            self.holdings.received(request)
        self._touched = True
        self.wake()

    def steady(self) -> bool:
        """Have beats gone through for a whole `durable_worker_timeout` since one last failed?"""
        return not self._in_trouble and time.monotonic() >= self._steady_after

    def beat(self) -> None:
        keys = self.ext.keys
        held = snapshot(self.hostname, self.holdings.current())
        # Not a transaction (the keys live in different cluster slots): only a
        # dead worker's record is ever read, and a dead worker does not write.
        pipe = self.ext.redis.pipeline(transaction=False)
        pipe.zadd(keys.workers(), {self.hostname: time.time()})
        pipe.delete(keys.worker_tasks(self.hostname))
        if held:
            pipe.hset(keys.worker_tasks(self.hostname), mapping=held)
        pipe.execute()

    def run_once(self) -> float:
        """Beat; or, draining and holding nothing any more, sign off and stop.

        A beat that a message prompted waits a moment for a burst of them to
        land. The next beat is due after `interval`, or after `DRAIN_CHECK`
        while the worker drains.
        """
        if self._touched:
            self._touched = False
            if not self._draining:  # a draining worker signs off as soon as it is idle
                self.stopping.wait(SNAPSHOT_DEBOUNCE)
        if self._draining and self._idle():
            self._sign_off()
            self.stopping.set()
            return 0.0
        self.beat()
        if self._in_trouble:  # Redis is back: give every worker the time to beat
            self._steady_after = time.monotonic() + self.timeout
            self._in_trouble = False
            logger.warning(
                "worker %s: Redis answers again; judging other workers in %.0fs",
                self.hostname,
                self.timeout,
            )
        return DRAIN_CHECK if self._draining else self.interval

    def on_error(self, error: Exception) -> None:
        """Redis away: beat again next round; `steady()` says no until beats go through."""
        self._in_trouble = True
        super().on_error(error)

    def _idle(self) -> bool:
        if self.holdings.current():
            return False
        return not self.ext.redis.scard(self.ext.keys.worker_runs(self.hostname))

    def _sign_off(self) -> None:
        try:  # a clean stop is not a death: nothing to recover
            pipe = self.ext.redis.pipeline(transaction=False)
            pipe.zrem(self.ext.keys.workers(), self.hostname)
            pipe.delete(self.ext.keys.worker_tasks(self.hostname))
            pipe.execute()
        except Exception as exc:
            logger.warning("could not sign off worker %s: %r", self.hostname, exc)


__all__ = ["Heartbeat"]
