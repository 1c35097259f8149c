"""What a worker holds: the requests it runs or has prefetched, as records.

A record keeps the message as the broker delivered it (raw body, content
type and encoding, headers, routing), not reprs of the arguments: a task
orphaned by a dead worker can then be reported, and re-sent by a rule,
exactly as it was.

"Holds" means: received and not yet acknowledged. Celery forgets the
requests it prefetched when its consumer closes (a lost broker connection,
the start of a warm shutdown), but their messages stay unacknowledged with
the broker (with Redis, until the `visibility_timeout`, an hour by
default). `Holdings` remembers them: a worker killed after its grace period
is still on record as holding them, and a live worker learns which run
messages it dropped, to send those runs again at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from celery.worker import state

from ..codec import packb_lenient, unpackb
from ..extension import RUN_TASK_NAME

DROP_CONFIRM = 1.0  # seconds a request must stay gone, unacknowledged, to count as dropped


def held_requests() -> list[Any]:
    """The requests this worker process is running or holds prefetched, as Celery sees them."""
    return [*state.active_requests, *state.reserved_requests]


@dataclass
class _Received:
    request: Any
    at: float = field(default_factory=time.monotonic)
    seen_held: bool = False  # Celery counted it as reserved or active once
    gone_since: float | None = None  # since when Celery no longer does


class Holdings:
    """The requests received by this worker and not yet acknowledged.

    `received()` is called from the consumer's thread, the rest from the
    monitor's: a lock keeps them apart.
    """

    def __init__(self, keep_for: float = 3600.0):
        self.keep_for = keep_for  # the broker redelivers a dropped message after this anyway
        self._received: dict[str, _Received] = {}
        self._lock = threading.Lock()

    def received(self, request: Any) -> None:
        with self._lock:
            self._received.setdefault(request.id, _Received(request))

    def current(self) -> list[Any]:
        """Every request held: running, prefetched, or dropped by Celery but not acknowledged."""
        held = {request.id: request for request in held_requests()}
        now = time.monotonic()
        with self._lock:
            for task_id, entry in list(self._received.items()):
                if entry.request.acknowledged or now - entry.at > self.keep_for:
                    del self._received[task_id]
                elif task_id in held:
                    entry.seen_held, entry.gone_since = True, None
                else:
                    held[task_id] = entry.request
                    if entry.seen_held and entry.gone_since is None:
                        entry.gone_since = now
        return list(held.values())

    def dropped_runs(self) -> list[Any]:
        """Run-task requests Celery dropped unacknowledged; each is handed out once.

        Dropped: counted as reserved or active once, gone from both for
        `DROP_CONFIRM` seconds (a finished request is acknowledged right
        after it leaves them), and still not acknowledged.
        """
        self.current()
        now = time.monotonic()
        dropped = []
        with self._lock:
            for task_id, entry in list(self._received.items()):
                if (
                    entry.request.name == RUN_TASK_NAME
                    and entry.gone_since is not None
                    and now - entry.gone_since >= DROP_CONFIRM
                    and not entry.request.acknowledged
                ):
                    dropped.append(entry.request)
                    del self._received[task_id]
        return dropped


def run_ids(requests: list[Any]) -> set[str]:
    """The runs that these requests (run-task messages among them) carry."""
    return {str(r.args[0]) for r in requests if r.name == RUN_TASK_NAME and r.args}


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


def snapshot(hostname: str, requests: list[Any] | None = None) -> dict[str, bytes]:
    """Records of every request held (by default, as Celery sees them), by task id.

    Run tasks are in it too: a run whose message a worker holds but has not
    claimed yet (prefetched, or in a pool process that died before its claim)
    is filed nowhere else, and its message would only come back after the
    broker's visibility timeout.
    """
    held = held_requests() if requests is None else requests
    return {request.id: packb_lenient(record_of(request, hostname)) for request in held}


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
