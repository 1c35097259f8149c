"""Recording an exception in the journal and raising it again later.

A step's or a workflow's error is stored as its type's dotted name, message,
args and traceback text. Rebuilding looks the type up only among modules that
are already imported (never imports by name from Redis data) and falls back to
`WorkflowFailedError`, which keeps the original type name and message.
"""

from __future__ import annotations

import builtins
import sys
import traceback
from typing import Any

from .codec import packb
from .errors import WorkflowFailedError
from .limits import truncate_text, truncate_traceback
from .settings import DEFAULT_MAX_TEXT_BYTES


def describe(exc: BaseException, *, limit: int = DEFAULT_MAX_TEXT_BYTES) -> dict[str, Any]:
    """The error as recorded: message and traceback cut to `limit` bytes each.

    Args too big to keep (or to encode) are replaced by the cut message, so
    the error is still rebuilt with its type and the message it recorded.
    """
    cls = type(exc)
    message = str(exc)
    short = truncate_text(message, limit)
    args: list[Any] = list(exc.args)
    try:
        if len(packb(args)) > limit:
            args = [short]
    except (TypeError, ValueError, OverflowError):
        args = [short]
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": short,
        "args": args,
        "traceback": truncate_traceback("".join(traceback.format_exception(exc)), limit),
    }


def type_name(error: dict[str, Any]) -> str:
    """The short type name: `ValueError`, `myapp.errors.PaymentDeclined`."""
    name = str(error.get("type", "Exception"))
    return name.removeprefix("builtins.")


def rebuild(error: dict[str, Any]) -> Exception:
    """An exception of the recorded type and message, as well as can be done."""
    cls = _lookup(str(error.get("type", "")))
    message = str(error.get("message", ""))
    if cls is not None:
        try:
            exc = cls(*error.get("args", [message]))
        except Exception:  # a constructor with other arguments
            exc = None
        if exc is not None and str(exc) == message:
            return exc
    return WorkflowFailedError(
        f"{type_name(error)}: {message}", error_type=type_name(error), error_message=message
    )


def _lookup(dotted: str) -> type[Exception] | None:
    module_name, _, qualname = dotted.rpartition(".")
    module = builtins if module_name == "builtins" else sys.modules.get(module_name)
    if module is None or not qualname:
        return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None
