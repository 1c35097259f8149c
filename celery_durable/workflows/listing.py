"""Looking across runs and workers: listings for the CLI and for code.

Listings are paged: each returns at most `limit` items and a cursor for the
next page, never an unbounded scan of Redis.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from celery import Celery

from .. import failures
from ..errors import ConfigurationError, RunNotFoundError
from ..extension import DurableExtension, extension_for
from ..journal.events import FINAL_STATUSES as FINAL
from ..journal.events import EventType

MAX_LIMIT = 1000
DEFAULT_TIMELINE = 200  # events of a run's timeline shown at once
_STREAM_ID = re.compile(r"^\d+-\d+$")
SCAN_FACTOR = 20  # with filters, look at most this many runs per one returned


def list_runs(
    *,
    workflow: str | None = None,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    app: Celery | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Runs newest first: ([{id, workflow, status, created_at, updated_at}], next cursor).

    The cursor is opaque; pass it back for the next page. With filters, a
    page may hold fewer than `limit` runs and still have a next cursor.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    ext = extension_for(app)
    top = _bound(cursor)
    found: list[dict[str, Any]] = []
    scanned, budget = 0, limit * (SCAN_FACTOR if workflow or status else 1)
    while len(found) < limit and scanned < budget:
        batch = ext.redis.zrevrangebyscore(
            ext.keys.runs_index(), top, "-inf", start=0, num=limit, withscores=True
        )
        if not batch:
            return found, None
        pipe = ext.redis.pipeline(transaction=False)
        for run_id, _ in batch:
            pipe.hmget(
                ext.keys.run_meta(run_id.decode()), "name", "status", "created_at", "updated_at"
            )
        for (run_id, score), (name, state, created, updated) in zip(
            batch, pipe.execute(), strict=True
        ):
            scanned += 1
            top = f"({score!r}"
            item = {
                "id": run_id.decode(),
                "workflow": _text(name),
                "status": _text(state),
                "created_at": _float(created),
                "updated_at": _float(updated),
            }
            if item["status"] is None:
                continue  # indexed, but its journal expired or was deleted
            if (workflow and item["workflow"] != workflow) or (status and item["status"] != status):
                continue
            found.append(item)
            if len(found) == limit:
                break
    more = ext.redis.zcount(ext.keys.runs_index(), "-inf", top) > 0
    return found, (top[1:] if more else None)


def describe_run(
    run_id: str,
    *,
    limit: int = DEFAULT_TIMELINE,
    cursor: str | None = None,
    app: Celery | None = None,
) -> dict[str, Any]:
    """A run's status, result or error, and one page of its timeline.

    The timeline holds at most `limit` events (with times and step
    durations), from the first or after `cursor`; `next_cursor` continues it
    and `events` counts the whole history. Reads are bounded: a run with
    100,000 events costs what one with `limit` does.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if cursor is not None and not _STREAM_ID.match(cursor):
        raise ConfigurationError(
            f"invalid cursor {cursor!r}: pass back the one `runs show` gave (such as "
            "1700000000000-0)"
        )
    ext = extension_for(app)
    page = ext.journal.page(run_id, after=cursor, count=limit)
    meta = page.meta
    if not meta:
        raise RunNotFoundError(f"no run with id {run_id!r}")
    started = page.first.ts if page.first else 0.0
    timeline = []
    for event in page.events:
        data = event.data
        item: dict[str, Any] = {
            "seq": event.seq,
            "type": event.type,
            "ts": event.ts,
            "offset": event.ts - started,
        }
        if "name" in data and event.type != EventType.WORKFLOW_STARTED:
            item["name"] = data["name"]
        elif event.type == EventType.PATCH_MARKED:
            item["name"] = data["change_id"]
        for key in (
            "attempt",
            "duration",
            "delay",
            "worker",
            "until",
            "status",
            "queue",
            "started_at",
            "finished_at",
        ):
            if data.get(key) is not None:
                item[key] = data[key]
        if "error" in data:
            item["error"] = _error_text(data["error"])
        timeline.append(item)
    last = page.last
    outcome: dict[str, Any] = {}
    if last is not None and last.type == EventType.WORKFLOW_COMPLETED:
        outcome["result"] = last.data.get("result")
    elif (
        last is not None
        and "error" in last.data
        and meta.get("status") in ("failed", "cancelled", "timed_out", "blocked")
    ):
        outcome["error"] = _error_text(last.data["error"])
        if last.data["error"].get("traceback"):
            outcome["traceback"] = last.data["error"]["traceback"]
    first = page.first.data if page.first else {}
    in_flight = steps_in_flight(ext, run_id) if meta.get("status") not in FINAL else []
    return {
        "id": run_id,
        "workflow": meta.get("name"),
        "status": meta.get("status"),
        "created_at": _float(meta.get("created_at")),
        "updated_at": _float(meta.get("updated_at")),
        "owner": meta.get("owner"),
        "args": first.get("args"),
        "kwargs": first.get("kwargs"),
        "idempotency_key": first.get("idempotency_key"),
        "parent": meta.get("parent"),
        "events": page.total,
        "timeline": timeline,
        "next_cursor": page.next_cursor,
        "steps_in_flight": in_flight,
        **outcome,
    }


def steps_in_flight(ext: DurableExtension, run_id: str, limit: int = DEFAULT_TIMELINE) -> list:
    """The run's dispatched steps without an outcome in its journal yet, by position:
    name, queue, attempt, who runs it (worker, since when) or `queued`, or `finished`
    (recorded by the step, not yet by the run). At most `limit` of them."""
    from ..journal.events import Event

    records = ext.step_records.outstanding(run_id)
    positions: dict[int, dict[str, bytes]] = {}
    for field, value in records.items():
        kind, _, position = field.decode().partition(":")
        if kind in ("d", "t", "a", "r", "o") and position.isdigit():
            positions.setdefault(int(position), {})[kind] = value
    found = [(p, f) for p, f in sorted(positions.items()) if "d" in f and f.get("o", b"x") != b""][
        :limit
    ]
    pipe = ext.redis.pipeline(transaction=False)
    for _, fields in found:
        pipe.xrange(ext.keys.run_events(run_id), fields["d"], fields["d"])
    listed = []
    for (position, fields), entries in zip(found, pipe.execute(), strict=True):
        data = Event.decode(entries[0][1][b"e"], where=run_id).data if entries else {}
        runner, _, since = (fields.get("r") or b"").decode().rpartition("|")
        state = "finished" if "o" in fields else ("running" if runner else "queued")
        listed.append(
            {
                "position": position,
                "name": data.get("name"),
                "queue": data.get("queue"),
                "attempt": int(fields.get("a") or 1),
                "state": state,
                "worker": runner.rsplit("/", 1)[0] if runner else None,
                "since": float(since) if since else None,
                "task_id": (fields.get("t") or b"").decode() or None,
            }
        )
    return listed


def _error_text(error: dict[str, Any]) -> str:
    return f"{failures.type_name(error)}: {error['message']}"


def list_workers(*, app: Celery | None = None) -> list[dict[str, Any]]:
    """Live workers by last heartbeat: its age, the runs, dispatched steps
    (`run_id#position`) and tasks each holds."""
    from ..worker.holdings import decode_record
    from ..worker.step_task import held_steps

    ext = extension_for(app)
    now = time.time()
    workers = ext.redis.zrevrange(ext.keys.workers(), 0, MAX_LIMIT - 1, withscores=True)
    pipe = ext.redis.pipeline(transaction=False)
    for name, _ in workers:
        pipe.smembers(ext.keys.worker_runs(name.decode()))
        pipe.hgetall(ext.keys.worker_tasks(name.decode()))
    answers = pipe.execute()
    listed = []
    for index, (name, beat) in enumerate(workers):
        runs, held = answers[2 * index], answers[2 * index + 1]
        records = [decode_record(raw) for raw in held.values()]
        age = now - beat
        listed.append(
            {
                "worker": name.decode(),
                "heartbeat_age": age,
                "alive": age < ext.settings.worker_timeout,
                "runs": sorted(r.decode() for r in runs),
                "steps": held_steps(records),
                "tasks": sorted(t.decode() for t in held),
            }
        )
    return listed


def _bound(cursor: str | None) -> str:
    """The listing's upper bound: everything older than the cursor's run."""
    if cursor is None:
        return "+inf"
    try:
        valid = math.isfinite(float(cursor))  # nan, inf: not a cursor a listing gives
    except ValueError:
        valid = False
    if not valid:
        raise ConfigurationError(f"invalid cursor {cursor!r}: pass back the one a listing gave")
    return f"({cursor}"


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


def _float(value: Any) -> float | None:
    try:
        return float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError):
        return None
