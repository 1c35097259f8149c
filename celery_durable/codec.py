"""The one msgpack codec for everything that crosses a process boundary.

What msgpack can carry: None, bool, int, float, str, bytes, lists and tuples
(tuples come back as lists), dicts, and timezone-aware datetimes. A value it
cannot carry is refused with the path to the offending part, so the user sees
`args[0]['when']` rather than a bare msgpack TypeError.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import msgpack

from .errors import EncodingError


def packb(value: Any) -> bytes:
    """Encode without validation messages: for data we built ourselves."""
    return msgpack.packb(value, use_bin_type=True, datetime=True)


def packb_lenient(value: Any) -> bytes:
    """Encode data we do not control (message headers) without failing.

    What msgpack cannot carry is kept as text: ISO 8601 for datetimes, repr
    for the rest. Never used for values that must come back as they were.
    """
    return msgpack.packb(value, use_bin_type=True, default=_as_text)


def _as_text(value: Any) -> str:
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    return repr(value)


def unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, timestamp=3)


def encode(value: Any, *, where: str) -> bytes:
    """Encode user data; on failure raise `EncodingError` naming `where`."""
    try:
        return packb(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodingError(_describe_failure(value, where) or f"{where}: {exc}") from None


def check_encodable(value: Any, *, where: str) -> None:
    encode(value, where=where)


def roundtrip(value: Any, *, where: str) -> Any:
    """`value` as a replay will see it (tuples become lists): what to hand back."""
    return unpackb(encode(value, where=where))


def _describe_failure(value: Any, path: str) -> str | None:
    """Walk `value` to find the first part msgpack refuses and say why."""
    if value is None or isinstance(value, bool | str | bytes | bytearray | float):
        return None
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return None
        return f"{path}: integer {value} is too large to record (msgpack holds 64 bits)"
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _describe_failure(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _describe_failure(key, f"{path} key {key!r}")
            if found:
                return found
            found = _describe_failure(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            return (
                f"{path}: naive datetime {value.isoformat()} cannot be recorded; "
                "give it a timezone (datetime.now(timezone.utc))"
            )
        return None
    return (
        f"{path}: a value of type {type(value).__module__}.{type(value).__qualname__} "
        "cannot be recorded; pass JSON-like data (None, bool, int, float, str, bytes, "
        "list, dict, tz-aware datetime)"
    )
