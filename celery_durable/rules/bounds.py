"""Limits on the parameters of rule parts, declared next to their type.

A parameter annotated `Annotated[float, Between(0, 60, low_open=True)]` is
checked by the rule loader before the part is built, and a value out of
range is reported with the rule and the field, together with every other
problem of the rule. Declaring the limit in the signature (rather than as a
`ValueError` in the constructor) lets the loader report all of them at once,
and lets a plugin's parameters be bounded the same way as the built-ins'.

Why bounds at all: a parameter is a promise about resources. `retries:
100000000` holds an action runner for days, `timeout: -5` fails every call,
`time_window_hours: .inf` never forgets; each is refused when the rules load
rather than discovered when the rule fires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Between:
    """A finite number from `low` to `high` (inclusive unless `low_open`)."""

    low: float
    high: float
    low_open: bool = False

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value`, or None when it is within bounds."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None  # the type check reports it
        low = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        wanted = f"a number {low} and <= {self.high:g}"
        if not math.isfinite(value):
            return f"expected {wanted}, got {value!r}"
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            return f"expected {wanted}, got {value!r}"
        return None
