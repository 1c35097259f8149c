"""A task's message as it was sent, and sending it again exactly.

Built where the task ran (from the real request: args and kwargs as the
objects the task received, re-encoded with the task's own serializer) or
from a dead worker's record (the raw body as the broker delivered it). A
retry decodes the body with Celery's serializer and sends the same
arguments, queue or exchange and routing key, priority, headers, time
limits, expiry and callbacks, under a new task id.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from celery import Celery
from kombu.serialization import dumps, loads

from ..redaction import ROUTING_OPTIONS

# What a resent message keeps of the original's options: where it went, and more.
OPTION_KEYS = (*ROUTING_OPTIONS, "shadow", "link", "link_error")
RETRY_HEADERS = ("durable_retry_of", "durable_retry_root", "durable_retry_attempt")


def from_request(task: Any, request: Any) -> dict[str, Any]:
    """The message of the task running now (in a pool child, on failure)."""
    signature = task.signature_from_request(request)
    options = dict(signature.options)
    embed = {
        "callbacks": options.get("link"),
        "errbacks": options.get("link_error"),
        "chain": options.get("chain"),
        "chord": options.get("chord"),
    }
    content_type, encoding, body = dumps(
        [list(signature.args), dict(signature.kwargs), embed], serializer=task.serializer
    )
    delivery = getattr(request, "delivery_info", None) or {}
    return _message(
        task_name=task.name,
        task_id=request.id,
        body=body,
        content_type=content_type,
        content_encoding=encoding,
        headers=dict(getattr(request, "headers", None) or {}),
        options=options,
        delivery=delivery,
    )


def from_record(record: dict[str, Any]) -> dict[str, Any]:
    """The message of a task held by a dead worker (see worker/holdings.py)."""
    headers = dict(record.get("headers") or {})
    timelimit = headers.get("timelimit") or [None, None]
    options = {
        "time_limit": timelimit[0],
        "soft_time_limit": timelimit[1],
        "expires": headers.get("expires"),
        "shadow": headers.get("shadow"),
        "priority": (headers.get("properties") or {}).get("priority"),
    }
    custom = {k: v for k, v in headers.items() if k.startswith("durable_")}
    return _message(
        task_name=record["task_name"],
        task_id=record["task_id"],
        body=record["body"],
        content_type=record["content_type"],
        content_encoding=record["content_encoding"],
        headers=custom,
        options=options,
        delivery=record.get("delivery_info") or {},
    )


def _message(
    *,
    task_name: str,
    task_id: str,
    body: Any,
    content_type: str,
    content_encoding: str,
    headers: dict[str, Any],
    options: dict[str, Any],
    delivery: dict[str, Any],
) -> dict[str, Any]:
    kept = {k: _plain(options.get(k)) for k in OPTION_KEYS if options.get(k) is not None}
    exchange, routing_key = delivery.get("exchange"), delivery.get("routing_key")
    if exchange:  # sent to a named exchange: keep exchange and routing key
        kept.update(exchange=exchange, routing_key=routing_key)
        kept.pop("queue", None)
    elif routing_key and "queue" not in kept:
        kept["queue"] = routing_key  # the default exchange routes by queue name
    if delivery.get("priority") is not None and "priority" not in kept:
        kept["priority"] = delivery["priority"]
    return {
        "task_name": task_name,
        "task_id": task_id,
        "body": body if isinstance(body, bytes) else str(body).encode(),
        "content_type": content_type,
        "content_encoding": content_encoding,
        "headers": {k: v for k, v in headers.items() if k not in RETRY_HEADERS},
        "retry": retry_info(headers, task_id),
        "options": kept,
    }


def retry_info(headers: dict[str, Any], task_id: str) -> dict[str, Any]:
    """Where a task stands in a retry chain started by the rules."""
    return {
        "attempt": int(headers.get("durable_retry_attempt") or 0),
        "of": headers.get("durable_retry_of"),
        "root": headers.get("durable_retry_root") or task_id,
    }


def arguments(message: dict[str, Any]) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """The real args, kwargs and embedded callbacks of the message."""
    body = loads(
        message["body"],
        message["content_type"],
        message["content_encoding"],
        accept={message["content_type"]},
    )
    if not isinstance(body, list | tuple):
        raise ValueError(f"task {message['task_name']}: not a protocol 2 message body")
    args, kwargs, embed = [*body, {}, {}][:3]
    return list(args), dict(kwargs), dict(embed or {})


def resend(
    app: Celery,
    message: dict[str, Any],
    *,
    countdown: float = 0.0,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> str:
    """Send the task again with the same everything but a new id; return that id.

    `args` and `kwargs`, when given, replace the task's own arguments.
    """
    own_args, own_kwargs, embed = arguments(message)
    args = own_args if args is None else args
    kwargs = own_kwargs if kwargs is None else kwargs
    retry = message["retry"]
    task_id = str(uuid.uuid4())  # the form Celery gives its own task ids
    options = dict(message["options"])
    options.setdefault("link", embed.get("callbacks"))
    options.setdefault("link_error", embed.get("errbacks"))
    headers = {
        **message["headers"],
        "durable_retry_of": message["task_id"],
        "durable_retry_root": retry["root"],
        "durable_retry_attempt": retry["attempt"] + 1,
    }
    app.send_task(
        message["task_name"],
        args=args,
        kwargs=kwargs,
        task_id=task_id,
        countdown=countdown or None,
        headers=headers,
        **{k: v for k, v in options.items() if v is not None},
    )
    return task_id


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value
