"""Activities about plain Celery tasks, seen from inside the worker.

`task.failed` comes from the `task_failure` signal where the task ran (a pool
child under prefork), with the real request: the activity carries the task's
message as it was sent, so a `retry` action re-sends it exactly. When the
pool child itself died (`WorkerLostError`, a hard time limit), the signal
fires in the main process, where the worker's own record of the request
fills in what the signal lacks. It is emitted only where a listener wants
it (the rules of a worker, see `worker/rules.py`), so elsewhere a failure
costs nothing more.

`task.orphaned` (`orphaned_data`) comes from a dead worker's record, and
`task.execution_time_exceeded` (`overrun_data`) from a periodic look at the
requests a worker is running (`worker/rules.ExecutionTimeWatch`).
"""

from __future__ import annotations

import logging
import traceback as tb
from typing import Any

from celery import Celery
from celery.signals import task_failure
from celery.utils.saferepr import saferepr

from ..activity import TASK_FAILED, Complete
from ..extension import RUN_TASK_NAME, DurableExtension, installed
from ..limits import truncate_text, truncate_traceback
from ..rules import task_message
from .holdings import held_requests, record_of

logger = logging.getLogger("celery_durable.tasks")

REPR_LIMIT = 1024


def connect_task_events(app: Celery) -> None:
    """Report the failures of installed apps' tasks (each to its own app's listeners).

    One receiver per process, connected once, that finds the extension from
    `sender.app`: a receiver per app would hold its app (and everything the
    app holds) for as long as the process lives.
    """
    task_failure.connect(on_task_failure, weak=False, dispatch_uid=_FAILURE_UID)


_FAILURE_UID = "celery_durable.task_events.on_task_failure"


def on_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    app = getattr(sender, "app", None)
    if app is None or sender.name == RUN_TASK_NAME:
        return  # a workflow's own failures are workflow.failed
    ext = installed(app)
    if ext is None or not ext.wants(TASK_FAILED):
        return  # not ours, or nothing here wants it: a failure costs nothing more
    try:
        data, complete = failure_data(ext, sender, task_id, exception, args, kwargs, einfo)
        ext.emit(TASK_FAILED, data, complete=complete)
    except Exception:
        logger.exception("could not report the failure of task %s", task_id)


def failure_data(
    ext: DurableExtension,
    task: Any,
    task_id: str | None,
    exception: BaseException | None,
    args: Any,
    kwargs: Any,
    einfo: Any,
) -> tuple[dict[str, Any], Complete]:
    """A task.failed activity's data, and how to complete it should a rule match.

    The data holds what conditions and messages need; the task's message as
    it was sent (what a retry re-sends, the costly part) is added by
    `complete()` only for an event that a rule acts on.
    """
    request = task.request
    own = getattr(request, "id", None) == task_id and getattr(request, "delivery_info", None)
    held = None if own else next((r for r in held_requests() if r.id == task_id), None)
    source = request if own else held
    delivery = dict(getattr(source, "delivery_info", None) or {})
    headers = dict(getattr(request, "headers", None) or {}) if own else {}
    limit = ext.settings.max_text_bytes
    data: dict[str, Any] = {
        "task_id": task_id,
        "task_name": task.name,
        "worker": getattr(request, "hostname", None) or (held and ext_hostname(held)),
        "queue": delivery.get("routing_key"),
        "exchange": delivery.get("exchange") or None,
        "priority": delivery.get("priority"),
        "args_repr": saferepr(args, REPR_LIMIT) if args is not None else "",
        "kwargs_repr": saferepr(kwargs, REPR_LIMIT) if kwargs else "",
        "error_type": type(exception).__name__ if exception else "",
        # error_pattern also sees the base classes: a ConnectionError subclass matches.
        "error_bases": _bases(exception),
        "error_message": truncate_text(str(exception), limit) if exception else "",
        "traceback": truncate_traceback(_traceback(exception, einfo), limit),
        "retry": task_message.retry_info(headers, task_id or ""),
        "message": None,
    }

    def complete(event_data: dict[str, Any]) -> None:
        if own:
            message = task_message.from_request(task, request)
        elif held is not None:  # the pool child is gone; the main process kept the request
            message = task_message.from_record(record_of(held, ext_hostname(held)))
        else:
            return
        event_data["message"] = message
        event_data["retry"] = message["retry"]
        options = message["options"]
        event_data["queue"] = options.get("queue") or options.get("routing_key")

    return data, complete


def orphaned_data(record: dict[str, Any], recovered_by: str) -> dict[str, Any]:
    """A task.orphaned activity from a dead worker's record of a held request."""
    message = task_message.from_record(record)
    options = message["options"]
    try:
        args, kwargs, _ = task_message.arguments(message)
    except Exception:  # an undecodable body is still reported, without its args
        args, kwargs = None, None
    return {
        "task_id": record["task_id"],
        "task_name": record["task_name"],
        "worker": record.get("worker"),
        "recovered_by": recovered_by,
        "queue": options.get("queue") or options.get("routing_key"),
        "exchange": options.get("exchange"),
        "priority": options.get("priority"),
        "was_running": bool(record.get("time_start")),
        "args_repr": saferepr(args, REPR_LIMIT) if args is not None else "",
        "kwargs_repr": saferepr(kwargs, REPR_LIMIT) if kwargs else "",
        "retry": message["retry"],
        "message": message,
    }


def ext_hostname(request: Any) -> str:
    return getattr(request, "hostname", "") or ""


def _bases(exception: BaseException | None) -> list[str]:
    if exception is None:
        return []
    return [c.__name__ for c in type(exception).__mro__[1:] if c not in (BaseException, object)]


def _traceback(exception: BaseException | None, einfo: Any) -> str:
    text = getattr(einfo, "traceback", None)
    if not text and exception is not None:
        text = "".join(tb.format_exception(exception))
    return text or ""


def overrun_data(request: Any, hostname: str, runtime: float, threshold: float) -> dict[str, Any]:
    """A task.execution_time_exceeded activity from a request the worker runs."""
    message = task_message.from_record(record_of(request, hostname))
    options = message["options"]
    return {
        "task_id": request.id,
        "task_name": request.name,
        "worker": hostname,
        "queue": options.get("queue") or options.get("routing_key"),
        "runtime": runtime,
        "threshold_seconds": threshold,
        "args_repr": saferepr(getattr(request, "argsrepr", "") or "", REPR_LIMIT),
        "retry": message["retry"],
        "message": message,
    }
