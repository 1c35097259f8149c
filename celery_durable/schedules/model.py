"""A schedule as stored: its definition, its state, and their Redis hash encoding.

The definition (`ScheduleSpec`) is what `schedule()` or `@workflow(schedule=)`
says; its digest tells a worker registering a decorator schedule whether
anything changed (nothing: the stored state, next tick included, is kept).
The state (`ScheduleState`) is what firing writes: next tick, last run,
counters. Both live in one hash (`Keys.schedule`), every value a string but
the arguments (msgpack).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..codec import packb, unpackb
from .timing import Timing, to_datetime

CATCH_UP = ("latest", "all", "none")
OVERLAP = ("allow", "skip")
RUNTIME = "runtime"  # made by schedule(): kept until deleted
DECORATOR = "decorator"  # from @workflow(schedule=...): written by every starting worker


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    workflow: str
    timing: Timing
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    catch_up: str = "latest"
    overlap: str = "allow"
    source: str = RUNTIME

    def fields(self) -> dict[str, str | bytes]:
        t = self.timing
        values: dict[str, str | bytes] = {
            "workflow": self.workflow,
            "cron": t.cron or "",
            "every_ms": _text(t.every_ms),
            "timezone": t.timezone,
            "start_ms": _text(t.start_ms),
            "end_ms": _text(t.end_ms),
            "catch_up": self.catch_up,
            "overlap": self.overlap,
            "source": self.source,
            "arguments": packb([self.args, self.kwargs]),
        }
        return values

    def digest(self) -> str:
        """Changes when anything that decides ticks or runs changes."""
        values = self.fields()
        canonical = packb([[k, values[k]] for k in sorted(values)])
        return hashlib.sha1(canonical).hexdigest()

    @classmethod
    def from_hash(cls, name: str, stored: dict[bytes, bytes]) -> ScheduleSpec:
        get = _reader(stored)
        args, kwargs = unpackb(stored[b"arguments"]) if b"arguments" in stored else ([], {})
        return cls(
            name=name,
            workflow=get("workflow") or "",
            timing=Timing(
                cron=get("cron") or None,
                every_ms=_int(get("every_ms")),
                timezone=get("timezone") or "UTC",
                start_ms=_int(get("start_ms")),
                end_ms=_int(get("end_ms")),
            ),
            args=list(args),
            kwargs=dict(kwargs),
            catch_up=get("catch_up") or "latest",
            overlap=get("overlap") or "allow",
            source=get("source") or RUNTIME,
        )


@dataclass(frozen=True)
class ScheduleState:
    paused: bool = False
    next_tick: int | None = None  # None: ended (past end_at)
    next_tick_raw: str = ""  # as stored: what firing compares before it advances
    last_tick: int | None = None
    last_run_id: str | None = None
    last_outcome: str | None = None
    last_fired_at: float | None = None
    runs: int = 0
    skipped: int = 0
    missed: int = 0
    created_at: float | None = None
    updated_at: float | None = None

    @classmethod
    def from_hash(cls, stored: dict[bytes, bytes]) -> ScheduleState:
        get = _reader(stored)
        return cls(
            paused=get("paused") == "1",
            next_tick=_int(get("next_tick")),
            next_tick_raw=get("next_tick") or "",
            last_tick=_int(get("last_tick")),
            last_run_id=get("last_run_id") or None,
            last_outcome=get("last_outcome") or None,
            last_fired_at=_float(get("last_fired_at")),
            runs=_int(get("runs")) or 0,
            skipped=_int(get("skipped")) or 0,
            missed=_int(get("missed")) or 0,
            created_at=_float(get("created_at")),
            updated_at=_float(get("updated_at")),
        )


def describe(spec: ScheduleSpec, state: ScheduleState) -> dict[str, Any]:
    """A schedule for listings and `--json`: plain data, times as aware datetimes."""
    t = spec.timing
    return {
        "name": spec.name,
        "workflow": spec.workflow,
        "cron": t.cron,
        "every": None if t.every_ms is None else t.every_ms / 1000,
        "timezone": t.timezone,
        "when": t.describe(),
        "start_at": _moment(t.start_ms),
        "end_at": _moment(t.end_ms),
        "args": spec.args,
        "kwargs": spec.kwargs,
        "catch_up": spec.catch_up,
        "overlap": spec.overlap,
        "source": spec.source,
        "status": "paused" if state.paused else ("ended" if state.next_tick is None else "active"),
        "next_at": None if state.paused else _moment(state.next_tick),
        "last_tick": _moment(state.last_tick),
        "last_run_id": state.last_run_id,
        "last_outcome": state.last_outcome,
        "runs": state.runs,
        "skipped": state.skipped,
        "missed": state.missed,
    }


def _moment(ms: int | None) -> Any:
    return None if ms is None else to_datetime(ms)


def _reader(stored: dict[bytes, bytes]) -> Any:
    def get(key: str) -> str | None:
        value = stored.get(key.encode())
        return None if value is None else value.decode()

    return get


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def _int(value: str | None) -> int | None:
    return int(value) if value else None


def _float(value: str | None) -> float | None:
    return float(value) if value else None
