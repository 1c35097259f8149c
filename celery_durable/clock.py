"""The time that durable timers are measured in.

Wall-clock seconds plus an offset that is zero in production. Tests move the
offset forward to fast-forward sleeps, timeouts and max_duration without
waiting (see the `durable_time_skip` fixture); everything that computes or
compares a due time asks this clock, never `time.time()` directly.
"""

from __future__ import annotations

import time


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
