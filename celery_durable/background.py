"""One small base for celery_durable's background threads.

The timer poller, the worker monitor, the rules' action runner and the
activity writer are each a daemon thread that does a round of work, waits,
and goes again until it is stopped. `Background` is that loop, written
once: a subclass says what a round is (`run_once`, which may ask for
another wait than `interval`), and the base runs it, waits (cut short by
`wake()` or `stop()`), and reports a round that failed through
`trouble_log` (Redis away: one warning per kind of trouble every half
minute, with what to do), then tries again after `interval`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from .trouble import trouble_log


class Background:
    """A daemon thread calling `run_once()` every `interval` seconds until stopped.

    `name` names the thread (`celery_durable: <name>`) and the warnings of
    its failed rounds.
    """

    #: Wait `interval` before the first round too (a thread whose `start()`
    #: already did one, as the heartbeat does to be on record at once).
    wait_first = False

    def __init__(self, name: str, interval: float):
        self.name = name
        self.interval = interval
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> float | None:
        """Do one round; return the seconds to wait before the next (None: `interval`)."""
        raise NotImplementedError

    def on_error(self, error: Exception) -> None:
        """A round raised `error`: say so (rarely); the next round comes after `interval`."""
        trouble_log.report(error, self.name)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"celery_durable: {self.name}", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Start the next round now rather than after the wait."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current round, waiting at most `timeout` seconds for it."""
        stop_together([self], timeout)

    def on_stopped(self) -> None:
        """The thread has ended (or `stop` waited `timeout` for it): a last word."""

    def _ask_to_stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    def _join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, timeout))

    def _loop(self) -> None:
        wait: float | None = self.interval if self.wait_first else 0.0
        while not self.stopping.is_set():
            if wait != 0.0:
                self._wake.wait(self.interval if wait is None else wait)
                if self.stopping.is_set():
                    return
            self._wake.clear()  # cleared before the round: a wake() during it is kept
            try:
                wait = self.run_once()
            except Exception as exc:
                self.on_error(exc)
                wait = None


def stop_together(threads: Iterable[Background | None], timeout: float) -> None:
    """Stop several at once: all are asked first, then waited for within one
    `timeout`. A warm shutdown so waits for the slowest round, not for the
    sum of every thread's own timeout."""
    present = [thread for thread in threads if thread is not None]
    for thread in present:
        thread._ask_to_stop()
    deadline = time.monotonic() + timeout
    for thread in present:
        thread._join(deadline - time.monotonic())
    for thread in present:
        thread.on_stopped()
