"""Runs left without an owner or a timer, and sending them on.

Every unfinished run has something that moves it on: a pending run its
`dispatch:` timer, a sleeping one its wake timer, a run waiting with a
timeout its wake timer, a running one its filing under a live worker (which
takes it over should the worker die). The write sequences keep it so (see
`timers/store.py`, `workflows/interruptions.py`), but a Redis that loses
acknowledged writes, or hands keys to someone's `DEL`, can break it. Such a
run is *stuck*: `list_stuck()` (`runs list --status stuck`) finds them,
`resume_run()` (`runs resume RUN_ID`) sends one on.

Resuming is fenced: a run that is not stuck is left alone; a stuck running
one is sent as a takeover of its recorded owner, so that should that owner
still be executing it after all, one of the two is fenced out at its next
write.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from ..errors import ConfigurationError, RunNotFoundError
from ..extension import DurableExtension, extension_for
from ..journal.events import FINAL_STATUSES, RunStatus
from ..timers.store import DISPATCH, WAKE

MAX_LIMIT = 1000
SCAN_FACTOR = 20  # look at most this many runs per one asked for

_FIELDS = ("name", "status", "owner", "wake_at", "created_at", "updated_at")


def stuck_reason(
    meta: dict[str, str], timers: set[str], filed: bool, owner_alive: bool
) -> str | None:
    """Why a run with this meta (and these timer kinds) would never move on; None if it will."""
    status = meta.get("status")
    if not status or status in FINAL_STATUSES:
        return None
    if status == RunStatus.PENDING and DISPATCH not in timers:
        return "pending with no dispatch timer: its message may be lost"
    if status == RunStatus.SLEEPING and WAKE not in timers:
        return "sleeping with no wake timer"
    if status == RunStatus.WAITING and meta.get("wake_at") and WAKE not in timers:
        return "waiting with a timeout but no wake timer"
    if status == RunStatus.BLOCKED and WAKE not in timers:
        return "blocked with no retry timer"
    if status == RunStatus.RUNNING and not (filed and owner_alive):
        owner = meta.get("owner", "?")
        if not owner_alive:
            return f"running, but its owner {owner} is not a live worker"
        return f"running, but not filed under its owner {owner}"
    return None


def _look(ext: DurableExtension, run_ids: list[str]) -> list[dict[str, Any]]:
    """What `stuck_reason` needs for each run, in two round trips."""
    pipe = ext.redis.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hmget(ext.keys.run_meta(run_id), *_FIELDS)
        pipe.zmscore(ext.keys.timers(), [f"{DISPATCH}:{run_id}", f"{WAKE}:{run_id}"])
    answers = pipe.execute()
    looked: list[dict[str, Any]] = []
    for index, run_id in enumerate(run_ids):
        values, scores = answers[2 * index], answers[2 * index + 1]
        meta = {f: v.decode() for f, v in zip(_FIELDS, values, strict=True) if v is not None}
        timers = {kind for kind, s in zip((DISPATCH, WAKE), scores, strict=True) if s is not None}
        looked.append({"id": run_id, "meta": meta, "timers": timers})
    owners = {r["meta"]["owner"] for r in looked if r["meta"].get("status") == RunStatus.RUNNING}
    owners.discard("")
    pipe = ext.redis.pipeline(transaction=False)
    pairs = [(r, r["meta"]["owner"]) for r in looked if r["meta"].get("owner") in owners]
    for record, owner in pairs:
        worker = owner.rsplit("/", 1)[0]
        pipe.sismember(ext.keys.worker_runs(worker), record["id"])
        pipe.zscore(ext.keys.workers(), worker)
    answers = pipe.execute()
    for index, (record, _) in enumerate(pairs):
        record["filed"] = bool(answers[2 * index])
        record["owner_alive"] = answers[2 * index + 1] is not None
    return looked


def _reason(record: dict[str, Any]) -> str | None:
    return stuck_reason(
        record["meta"],
        record["timers"],
        record.get("filed", False),
        record.get("owner_alive", False),
    )


def list_stuck(
    *, limit: int = 50, cursor: str | None = None, app: Celery | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Stuck runs, newest first: ([{id, workflow, status, reason, ...}], next cursor).

    Looks at most `limit * SCAN_FACTOR` runs per page; a page may be short
    and still have a next cursor.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    ext = extension_for(app)
    top = _bound(cursor)
    found: list[dict[str, Any]] = []
    budget = limit * SCAN_FACTOR
    while len(found) < limit and budget > 0:
        batch = ext.redis.zrevrangebyscore(
            ext.keys.runs_index(), top, "-inf", start=0, num=min(budget, MAX_LIMIT), withscores=True
        )
        if not batch:
            return found, None
        budget -= len(batch)
        looked = _look(ext, [run_id.decode() for run_id, _ in batch])
        for (_, score), record in zip(batch, looked, strict=True):
            top = f"({score!r}"
            reason = _reason(record)
            if reason is not None:
                found.append(_item(record, reason))
                if len(found) == limit:
                    break
    more = ext.redis.zcount(ext.keys.runs_index(), "-inf", top) > 0
    return found, (top[1:] if more else None)


def resume_run(run_id: str, *, app: Celery | None = None) -> str:
    """Send a stuck run on; say what was done. A run that is not stuck is left alone.

    What is sent is recovery's decision for `Cause.RESUME` (worker/recovery.py).
    """
    from ..worker.recovery import Action, Cause, carry_out, decide

    ext = extension_for(app)
    (record,) = _look(ext, [run_id])
    meta = record["meta"]
    if not meta:
        raise RunNotFoundError(f"no run with id {run_id!r}")
    if meta.get("status") == RunStatus.BLOCKED:
        from .blocking import resume_blocked

        return resume_blocked(ext, run_id)
    reason = _reason(record)
    if reason is None:
        return f"run {run_id} is {meta.get('status', '')} and not stuck: nothing done"
    decision = decide(Cause.RESUME, meta, owner_gone=True)
    carry_out(ext, run_id, meta, decision)
    if decision.action is Action.TAKE_OVER:
        return f"run {run_id} ({reason}): sent again, taking over from {decision.takeover}"
    return f"run {run_id} ({reason}): sent again, and its timer set"


def _item(record: dict[str, Any], reason: str) -> dict[str, Any]:
    meta = record["meta"]
    return {
        "id": record["id"],
        "workflow": meta.get("name"),
        "status": meta.get("status"),
        "reason": reason,
        "owner": meta.get("owner"),
        "created_at": _float(meta.get("created_at")),
        "updated_at": _float(meta.get("updated_at")),
    }


def _bound(cursor: str | None) -> str:
    if cursor is None:
        return "+inf"
    try:
        value = float(cursor)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigurationError(f"invalid cursor {cursor!r}: pass back the one a listing gave")
    return f"({cursor}"


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


__all__ = ["list_stuck", "resume_run", "stuck_reason"]
