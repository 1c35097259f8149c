"""The one way tests wait: poll a condition, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_until(
    condition: Callable[[], Any], timeout: float = 15.0, what: str | Callable[[], str] = "condition"
) -> Any:
    """Poll `condition` until it is truthy (and return it); fail the test past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = what() if callable(what) else what
            pytest.fail(f"not within {timeout:g}s: {text}")
        time.sleep(0.02)
