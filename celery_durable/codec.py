"""The one msgpack codec for everything that crosses a process boundary.

What msgpack can carry: None, bool, int, float, str, bytes, lists and tuples
(tuples come back as lists), dicts, and timezone-aware datetimes. User data
is checked before it is encoded, and a value that could not be recorded, or
not read back, is refused with the path to the offending part, so the user
sees `args[0]['when']` rather than a bare msgpack TypeError:

- dict keys must be str or int: msgpack would write a tuple key, but it
  comes back as a list, which cannot be a key, and the run could not be
  read (other keys would not survive `--json` output);
- at most `MAX_DEPTH` levels of nested lists, tuples and dicts (msgpack
  itself stops at 511, counted with the event around the value).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import msgpack

from .errors import EncodingError

MAX_DEPTH = 100

# Exact types that need no look inside (subclasses take the long way). Ints
# are flat for the first pass: msgpack checks their range itself.
_LEAVES = frozenset({type(None), bool, str, bytes, bytearray, float})
_FLAT = _LEAVES | {int}


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
    """Encode user data; on failure raise `EncodingError` naming `where` and the part.

    A first pass looks only into containers, for what msgpack would accept
    but not read back (dict keys) or stop at (depth); msgpack then refuses
    the types it cannot carry, and only then a full pass finds which part.
    """
    found = _problem(value, 0, full=False)
    if found is None:
        try:
            return packb(value)
        except (TypeError, ValueError, OverflowError) as exc:
            found = _problem(value, 0, full=True) or (_Path(), str(exc))
    path, reason = found
    raise EncodingError(f"{where}{path}: {reason}")


class Packed:
    """A value encoded already, with what it decodes to.

    A step's result is encoded to check it (and to hand back what a replay
    will see); given as a value of an event's data, `packb_map` writes those
    bytes as they are instead of encoding the value a second time.
    """

    __slots__ = ("raw", "value")

    def __init__(self, value: Any, raw: bytes):
        self.value = value
        self.raw = raw

    def __repr__(self) -> str:
        return f"Packed({self.value!r}, {len(self.raw)} bytes)"


# Below this size a second encoding costs less than writing a map piece by piece.
PACKED_MIN_BYTES = 512


def packed_or_value(raw: bytes) -> Any:
    """What to put in an event for a value encoded as `raw`: `Packed` when that
    saves a second encoding, else the value itself."""
    value = unpackb(raw)
    return Packed(value, raw) if len(raw) >= PACKED_MIN_BYTES else value


def has_packed(data: dict[str, Any]) -> bool:
    return any(type(value) is Packed for value in data.values())


def unpacked(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with each `Packed` value replaced by the value it holds."""
    return {k: v.value if type(v) is Packed else v for k, v in data.items()}


def array_header(size: int) -> bytes:
    """The msgpack header of an array of `size` items (what precedes their encodings)."""
    if size < 16:
        return bytes((0x90 | size,))
    if size < 1 << 16:
        return b"\xdc" + size.to_bytes(2, "big")
    return b"\xdd" + size.to_bytes(4, "big")


def map_header(size: int) -> bytes:
    """The msgpack header of a map of `size` pairs (what precedes their encodings)."""
    if size < 16:
        return bytes((0x80 | size,))
    if size < 1 << 16:
        return b"\xde" + size.to_bytes(2, "big")
    return b"\xdf" + size.to_bytes(4, "big")


def packb_map(data: dict[str, Any]) -> bytes:
    """Encode a map whose values may be `Packed`: bytes equal to `packb` of the plain map."""
    parts = [map_header(len(data))]
    for key, value in data.items():
        parts.append(packb(key))
        parts.append(value.raw if type(value) is Packed else packb(value))
    return b"".join(parts)


def roundtrip(value: Any, *, where: str) -> Any:
    """`value` as a replay will see it (tuples become lists): what to hand back."""
    return unpackb(encode(value, where=where))


class _Path(list[str]):
    """Parts of a path, innermost first (appended on the way out of a failure)."""

    shown = True

    def __str__(self) -> str:
        return "".join(reversed(self)) if self.shown else ""


def _problem(value: Any, depth: int, *, full: bool) -> tuple[_Path, str] | None:
    """The first part of `value` that cannot be recorded: (its path, why), or None.

    With `full`, every type is checked; without, only containers are looked
    into (keys and depth). The path is built only on the way out of a
    failure, so a valid value costs one pass and no string formatting.
    """
    kind = type(value)
    if kind in _LEAVES:
        return None
    if isinstance(value, list | tuple | dict):
        if depth >= MAX_DEPTH:
            path = _Path()
            path.shown = False  # a hundred [0]s say less than the depth does
            return path, (
                f"nested more than {MAX_DEPTH} levels deep (lists, tuples and dicts); "
                f"celery_durable records at most {MAX_DEPTH} levels: flatten the value"
            )
        flat = _LEAVES if full else _FLAT
        is_dict = isinstance(value, dict)
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in pairs:
            if is_dict and type(key) is not str:
                bad_key = _key_problem(key, depth, full=full)
                if bad_key is not None:
                    return bad_key
            if type(item) in flat:
                continue
            found = _problem(item, depth + 1, full=full)
            if found is not None:
                found[0].append(f"[{key!r}]")  # an index's repr is the number
                return found
        return None
    if not full:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if -(2**63) <= value < 2**64:
            return None
        return _Path(), f"integer {value} is too large to record (msgpack holds 64 bits)"
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            return _Path(), (
                f"naive datetime {value.isoformat()} cannot be recorded; "
                "give it a timezone (datetime.now(timezone.utc))"
            )
        return None
    return _Path(), (
        f"a value of type {kind.__module__}.{kind.__qualname__} "
        "cannot be recorded; pass JSON-like data (None, bool, int, float, str, bytes, "
        "list, dict, tz-aware datetime)"
    )


def _key_problem(key: Any, depth: int, *, full: bool) -> tuple[_Path, str] | None:
    """Why a dict key (other than a str) cannot be recorded, or None."""
    if not isinstance(key, str | int):
        return _Path([f" key {key!r}"]), (
            f"a dict key of type {type(key).__name__} cannot be recorded; use str or int keys"
        )
    if full:
        found = _problem(key, depth, full=True)
        if found is not None:
            return _Path([f" key {key!r}"]), found[1]
    return None
