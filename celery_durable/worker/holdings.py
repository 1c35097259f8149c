"""What a worker holds: the requests it runs or has prefetched, as records.

A record keeps the message as the broker delivered it (raw body, content
type and encoding, headers, routing), not reprs of the arguments: a task
orphaned by a dead worker can then be reported, and re-sent by a rule,
exactly as it was.
"""

from __future__ import annotations

from typing import Any

from celery.worker import state

from ..codec import packb_lenient, unpackb
from ..extension import RUN_TASK_NAME


def held_requests() -> list[Any]:
    """The requests this worker process is running or holds prefetched."""
    return [*state.active_requests, *state.reserved_requests]


def record_of(request: Any, hostname: str) -> dict[str, Any]:
    body = request.body
    return {
        "task_id": request.id,
        "task_name": request.name,
        "worker": hostname,
        "body": body if isinstance(body, bytes) else str(body).encode(),
        "content_type": request.content_type,
        "content_encoding": request.content_encoding,
        "headers": request.request_dict,
        "delivery_info": request.delivery_info,
        "time_start": request.time_start,
    }


def snapshot(hostname: str) -> dict[str, bytes]:
    """Records of every request held, by task id.

    Run tasks are in it too: a run whose message a worker holds but has not
    claimed yet (prefetched, or in a pool process that died before its claim)
    is filed nowhere else, and its message would only come back after the
    broker's visibility timeout.
    """
    return {request.id: packb_lenient(record_of(request, hostname)) for request in held_requests()}


def run_message(record: dict[str, Any]) -> tuple[str, str | None] | None:
    """For a held run-task message: (its run id, the dead owner it takes over).

    None for a plain task's message.
    """
    if record.get("task_name") != RUN_TASK_NAME:
        return None
    from ..rules.task_message import arguments, from_record

    try:
        args, kwargs, _ = arguments(from_record(record))
    except Exception:
        return None
    return (str(args[0]), kwargs.get("takeover") or None) if args else None


def decode_record(raw: bytes) -> dict[str, Any]:
    return unpackb(raw)
