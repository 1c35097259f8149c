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


def describe(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    args: list[Any] = list(exc.args)
    try:
        packb(args)
    except (TypeError, ValueError, OverflowError):
        args = [str(exc)]
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc),
        "args": args,
        "traceback": "".join(traceback.format_exception(exc)),
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
