"""Validation of user-facing options: durations ("30s", "2h", "7d") and counts."""

from __future__ import annotations

import math
import re

from .errors import ConfigurationError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(value: float | int | str | None, *, field: str = "duration") -> float | None:
    """Return seconds as a float, or None for None.

    `field` names the option in the error message, so a typo in
    `@workflow(max_duration="7 days")` says which option was wrong.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"{field}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if not match:
            raise ConfigurationError(
                f"{field}: {value!r} is not a duration; write a number of seconds or a "
                "number with a unit: ms, s, m, h, d, w (for example '30s', '2h', '7d')"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ConfigurationError(
            f"{field}: expected a duration such as '30s' or a number of seconds, "
            f"got {type(value).__name__}"
        )
    if not math.isfinite(seconds):  # NaN and inf would reach Redis as due times
        raise ConfigurationError(f"{field}: a duration must be a finite number, got {value!r}")
    if seconds < 0:
        raise ConfigurationError(f"{field}: a duration cannot be negative ({value!r})")
    return seconds


def parse_count(value: object, *, field: str) -> int:
    """An integer >= 0, such as max_retries; anything else is refused by name."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"{field}: expected an integer >= 0, got {value!r}")
    return value
