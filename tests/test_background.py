"""Background threads stopped together: a warm shutdown waits for the slowest
round, not for the sum of every thread's timeout."""

from __future__ import annotations

import threading
import time

from celery_durable.background import Background, stop_together


class Stuck(Background):
    """A thread whose round blocks until `release` is set (a slow Redis, a webhook)."""

    def __init__(self, name: str):
        super().__init__(name, interval=0.01)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.stopped_calls = 0

    def run_once(self) -> float | None:
        self.entered.set()
        self.release.wait(10)
        return None

    def on_stopped(self) -> None:
        self.stopped_calls += 1


def test_threads_stopped_together_share_one_timeout():
    threads = [Stuck(f"stuck {n}") for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            assert thread.entered.wait(5), f"{thread.name} never began a round"
        began = time.monotonic()
        stop_together(threads, timeout=1.0)
        took = time.monotonic() - began
        assert 1.0 <= took < 2.0, took  # one timeout for all, not 3 x 1 s
        assert [t.stopped_calls for t in threads] == [1, 1, 1]
        assert all(t.stopping.is_set() for t in threads)
    finally:
        for thread in threads:
            thread.release.set()


def test_a_round_in_progress_finishes_before_the_thread_ends():
    thread = Stuck("quick")
    thread.start()
    assert thread.entered.wait(5)
    threading.Timer(0.2, thread.release.set).start()
    stop_together([thread, None], timeout=5.0)
    assert thread._thread is not None and not thread._thread.is_alive()
    assert thread.stopped_calls == 1
