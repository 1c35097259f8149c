"""How big what celery_durable stores may get: truncated text, refused payloads.

Two kinds of data, two policies:

- Diagnostic text (error messages, tracebacks, whatever a rule's history
  entry or an action's payload carries) is cut to `durable_max_text_bytes`
  with a visible marker, `… [truncated 9,991,234 bytes]`: a 10 MB exception
  message must not become 10 MB in every event, history entry and webhook.
- Data a run needs back whole (its arguments, step and workflow results,
  event payloads) is never cut: a value over `durable_max_payload_bytes`
  encoded is refused with `PayloadTooLargeError`, naming what and how big.
"""

from __future__ import annotations

from typing import Any

from .codec import encode, packed_or_value, unpackb
from .errors import PayloadTooLargeError

MIN_LINE = 200


def marker(dropped: int) -> str:
    return f"… [truncated {dropped:,} bytes]"


def truncate_text(text: str, limit: int, *, keep: str = "head") -> str:
    """`text` cut to at most `limit` bytes of UTF-8, the marker included.

    `keep="head"` keeps the beginning (a message); `"ends"` keeps the
    beginning and the end around the marker (a traceback, whose last lines
    name the error).
    """
    if len(text) * 4 <= limit:  # fast path: cannot be over, whatever the characters
        return text
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    # The marker's own length depends on the count it shows; reserve for the largest.
    room = max(0, limit - len(marker(len(raw)).encode()) - 2)
    if keep == "ends":
        head, tail = _decode(raw[: room // 2]), _decode(raw[len(raw) - (room - room // 2) :])
        dropped = len(raw) - len(head.encode()) - len(tail.encode())
        return f"{head}\n{marker(dropped)}\n{tail}"
    head = _decode(raw[:room])
    return head + marker(len(raw) - len(head.encode()))


def truncate_traceback(text: str, limit: int) -> str:
    """A traceback cut to `limit` bytes: each line first (a 10 MB message is one
    line, its exception's last), then the whole, keeping its first and last lines."""
    if len(text) * 4 <= limit:
        return text
    line_limit = max(MIN_LINE, limit // 8)
    lines = text.splitlines(keepends=True)
    text = "".join(
        truncate_text(line.rstrip("\n"), line_limit) + "\n" if len(line) > line_limit else line
        for line in lines
    )
    return truncate_text(text, limit, keep="ends")


def truncate_bytes(data: bytes, limit: int) -> bytes | str:
    """Bytes over `limit` become text: their head (decoded leniently) and the marker."""
    if len(data) <= limit:
        return data
    room = max(0, limit - len(marker(len(data)).encode()))
    return data[:room].decode("utf-8", "replace") + marker(len(data) - room)


def bound_strings(value: Any, limit: int) -> Any:
    """`value` with every string and bytes value over `limit` bytes truncated.

    Walks dicts, lists and tuples (tuples become lists); returns the very
    same object when nothing had to change, so a small event costs one walk.
    """
    if isinstance(value, str):
        return truncate_text(value, limit)
    if isinstance(value, bytes | bytearray):
        return truncate_bytes(bytes(value), limit)
    if isinstance(value, dict):
        changed = False
        bounded = {}
        for key, item in value.items():
            new = bound_strings(item, limit)
            changed = changed or new is not item
            bounded[key] = new
        return bounded if changed else value
    if isinstance(value, list | tuple):
        items = [bound_strings(item, limit) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items
    return value


def check_size(encoded: bytes, limit: int | None, *, what: str) -> bytes:
    """`encoded` unchanged, or `PayloadTooLargeError` naming `what` when over `limit`."""
    if limit is not None and len(encoded) > limit:
        raise PayloadTooLargeError(
            f"{what} is {len(encoded):,} bytes encoded, over the limit of {limit:,} "
            "(durable_max_payload_bytes): keep large data elsewhere (a file, an object "
            "store, a database) and pass a reference to it, or raise the setting"
        )
    return encoded


def encode_bounded(value: Any, limit: int | None, *, what: str) -> bytes:
    """Encode user data, refusing what cannot be encoded or is over `limit`."""
    return check_size(encode(value, where=what), limit, what=what)


def roundtrip_bounded(value: Any, limit: int | None, *, what: str) -> Any:
    """`value` as a replay will see it (tuples become lists), refused over `limit`."""
    return unpackb(encode_bounded(value, limit, what=what))


def packed_bounded(value: Any, limit: int | None, *, what: str) -> Any:
    """`roundtrip_bounded`, as a value for an event's data: a big one stays `Packed`
    (its encoding is written as is), a small one is the value itself."""
    if type(value) in _SCALARS:  # comes back as it is: no decoding to do
        encode_bounded(value, limit, what=what)
        return value
    return packed_or_value(encode_bounded(value, limit, what=what))


_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def _decode(raw: bytes) -> str:
    # A cut may split a character: drop its partial bytes rather than fail.
    return raw.decode("utf-8", "ignore")
