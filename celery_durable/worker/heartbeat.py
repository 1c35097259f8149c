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
import threading
import time
from typing import Any

from ..extension import DurableExtension
from ..workflows.interruptions import trouble_log
from .holdings import Holdings, snapshot

logger = logging.getLogger("celery_durable.recovery")

SNAPSHOT_DEBOUNCE = 0.05  # seconds to let a burst of received messages land
DRAIN_CHECK = 0.05  # seconds between looks at a draining worker's holdings


class Heartbeat:
    def __init__(self, ext: DurableExtension, hostname: str):
        self.ext = ext
        self.hostname = hostname
        self.interval = ext.settings.heartbeat_interval
        self.timeout = ext.settings.worker_timeout
        transport = ext.app.conf.broker_transport_options or {}
        self.holdings = Holdings(keep_for=float(transport.get("visibility_timeout", 3600)))
        self.stopped = threading.Event()  # set once it stopped beating (and signed off)
        self._touched = threading.Event()
        self._draining = False
        self._thread: threading.Thread | None = None
        self._in_trouble = False
        self._steady_after = 0.0  # monotonic: see steady()

    def start(self) -> None:
        self.beat()  # on record before the first task arrives
        self._thread = threading.Thread(
            target=self._loop, name="celery_durable-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """The worker has stopped cleanly: sign off now."""
        self.stopped.set()
        self._touched.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._sign_off()

    def stop_when_idle(self) -> None:
        """The worker is shutting down: go on beating until it holds nothing, then sign off."""
        self._draining = True
        self._touched.set()

    def touch(self, request: Any = None) -> None:
        """A message arrived: hold on to it, and write the record of held messages soon."""
        if request is not None:
            self.holdings.received(request)
        self._touched.set()

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

    def run_once(self) -> bool:
        """Beat; or, draining and holding nothing any more, sign off and say False."""
        if self._draining and self._idle():
            self._sign_off()
            return False
        self.beat()
        if self._in_trouble:  # Redis is back: give every worker the time to beat
            self._steady_after = time.monotonic() + self.timeout
            self._in_trouble = False
            logger.warning(
                "worker %s: Redis answers again; judging other workers in %.0fs",
                self.hostname,
                self.timeout,
            )
        return True

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

    def _loop(self) -> None:
        while not self.stopped.is_set():
            touched = self._touched.wait(DRAIN_CHECK if self._draining else self.interval)
            if self.stopped.is_set():
                return
            if touched:
                self._touched.clear()
                if not self._draining:  # a draining worker signs off as soon as it is idle
                    self.stopped.wait(SNAPSHOT_DEBOUNCE)  # let a burst of messages land
            try:
                if not self.run_once():
                    self.stopped.set()
                    return
            except Exception as exc:  # Redis away: try again next round
                self._in_trouble = True
                trouble_log.report(exc, f"worker {self.hostname}: heartbeat")


__all__ = ["Heartbeat"]
