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
    """Records of the plain tasks held, by task id; runs are tracked on their own."""
    return {
        request.id: packb_lenient(record_of(request, hostname))
        for request in held_requests()
        if request.name != RUN_TASK_NAME
    }


def decode_record(raw: bytes) -> dict[str, Any]:
    return unpackb(raw)
