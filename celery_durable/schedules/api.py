"""Schedules from code (and from the CLI): define, pause, resume, delete, list, trigger."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

from celery import Celery

from ..errors import ScheduleError, ScheduleNotFoundError
from ..extension import DurableExtension, extension_for
from ..workflows.definition import Workflow, WorkflowFunction
from ..workflows.runs import RunHandle, _workflow_name, check_arguments, create_run
from .model import CATCH_UP, OVERLAP, RUNTIME, ScheduleSpec, ScheduleState, describe
from .store import ScheduleStore, schedule_store
from .timing import make_timing, to_datetime, to_ms

MAX_NAME = 200
MAX_LIMIT = 1000


def schedule(
    workflow: WorkflowFunction | type[Workflow] | str,
    /,
    *,
    cron: str | None = None,
    every: float | str | None = None,
    name: str | None = None,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    timezone: str | None = None,
    catch_up: str = "latest",
    overlap: str = "allow",
    start_at: dt.datetime | float | None = None,
    end_at: dt.datetime | float | None = None,
    app: Celery | None = None,
) -> dict[str, Any]:
    """Start `workflow` on every tick of `cron` (in `timezone`) or `every` interval.

    Stored in Redis until `delete_schedule(name)`; the workers' timer pollers
    fire it, exactly one run per tick whatever the number of workers. Called
    again with the same `name`, it replaces the definition (the next tick is
    computed anew). `name` defaults to the workflow's name.

    - `catch_up`: what to do with ticks that came due while no worker ran:
      `"latest"` runs the latest of them, `"all"` runs each (the latest 1,000
      at most), `"none"` runs none (a tick more than `durable_schedule_grace`
      late is not run).
    - `overlap="skip"` skips a tick while the schedule's previous run is
      unfinished (recorded as skipped); `"allow"` starts it anyway.
    - `start_at`/`end_at`: the first and last moments ticks may fall
      (datetimes, naive ones read in `timezone`, or Unix seconds).

    Everything is checked before anything is written: a bad cron string,
    timezone, interval or policy raises `ScheduleError` naming the schedule
    and the option; arguments that cannot be recorded, `EncodingError`.
    Returns the schedule as `list_schedules()` shows it.
    """
    workflow_name = _workflow_name(workflow)
    name = workflow_name if name is None else name
    where = f"schedule {name!r}"
    _check_name(name)
    if catch_up not in CATCH_UP:
        raise ScheduleError(
            f"{where}: catch_up must be one of {', '.join(CATCH_UP)}; got {catch_up!r}"
        )
    if overlap not in OVERLAP:
        raise ScheduleError(
            f"{where}: overlap must be one of {', '.join(OVERLAP)}; got {overlap!r}"
        )
    if not isinstance(args, list | tuple) or not isinstance(kwargs or {}, dict):
        raise ScheduleError(f"{where}: args must be a list or tuple and kwargs a dict")
    timing = make_timing(
        cron=cron, every=every, timezone=timezone, start_at=start_at, end_at=end_at, where=where
    )
    ext = extension_for(app)
    check_arguments(ext, where, list(args), dict(kwargs or {}))
    spec = ScheduleSpec(
        name=name,
        workflow=workflow_name,
        timing=timing,
        args=list(args),
        kwargs=dict(kwargs or {}),
        catch_up=catch_up,
        overlap=overlap,
        source=RUNTIME,
    )
    now = ext.clock.now()
    schedule_store(ext).save(spec, timing.next_after(to_ms(now)), now)
    return _described(ext, name)


def pause_schedule(name: str, *, app: Celery | None = None) -> None:
    """Stop firing until `resume_schedule(name)`; ticks that fall meanwhile are not run."""
    store = _existing(extension_for(app), name)
    store.pause(name)


def resume_schedule(name: str, *, app: Celery | None = None) -> dict[str, Any]:
    """Fire again from the next tick after now (ticks passed while paused are not run)."""
    ext = extension_for(app)
    store = _existing(ext, name)
    spec, _ = _load(store, name)
    store.resume(name, spec.timing.next_after(to_ms(ext.clock.now())))
    return _described(ext, name)


def delete_schedule(name: str, *, app: Celery | None = None) -> None:
    """Delete the schedule, its timer and history; its runs go on.

    A schedule from `@workflow(schedule=...)` comes back when a worker
    starts with that code: remove `schedule=` from the workflow as well.
    """
    if not schedule_store(extension_for(app)).delete(name):
        raise ScheduleNotFoundError(f"no schedule named {name!r}")


def list_schedules(
    *, limit: int = MAX_LIMIT, after: str | None = None, app: Celery | None = None
) -> list[dict[str, Any]]:
    """Schedules in name order, at most `limit`, from just after the name `after`.

    Each: name, workflow, cron or every, timezone, policies, source
    (runtime or decorator), status (active, paused, ended), next_at,
    last_tick, last_run_id, last_outcome, and counts of runs, skipped and
    missed ticks.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ScheduleError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    store = schedule_store(extension_for(app))
    names = store.names(after=after, limit=limit)
    return [describe(*loaded) for loaded in store.load_many(names) if loaded is not None]


def describe_schedule(
    name: str, *, upcoming: int = 5, history: int = 20, app: Celery | None = None
) -> dict[str, Any]:
    """One schedule as listed, plus its next `upcoming` fire times and latest ticks."""
    ext = extension_for(app)
    described = _described(ext, name)
    spec, state = _load(schedule_store(ext), name)
    if state.paused or state.next_tick is None:
        described["upcoming"] = []
    else:
        ticks = [state.next_tick, *spec.timing.upcoming(state.next_tick, max(0, upcoming - 1))]
        described["upcoming"] = [to_datetime(t) for t in ticks[:upcoming]]
    described["history"] = [_entry(e) for e in schedule_store(ext).history(name, history)]
    return described


def trigger_schedule(name: str, *, app: Celery | None = None) -> RunHandle:
    """Start one run of the schedule now, outside its ticks (paused or not).

    The run's context has `scheduled_at` = now and the schedule's name; it
    becomes the schedule's last run (so `overlap="skip"` waits for it).
    """
    ext = extension_for(app)
    spec, _ = _load(_existing(ext, name), name)
    now = ext.clock.now()
    tick = to_ms(now)
    run_id, _ = create_run(
        ext,
        spec.workflow,
        list(spec.args),
        dict(spec.kwargs),
        f"schedule:{name}:trigger:{uuid.uuid4().hex}",
        started={"schedule": name, "scheduled_at": to_datetime(tick)},
    )
    schedule_store(ext).record(
        name,
        {"tick": tick, "outcome": "triggered", "run_id": run_id, "at": time.time()},
        {"last_run_id": run_id, "last_tick": str(tick), "last_outcome": "triggered"},
    )
    return RunHandle(run_id, ext)


# -- helpers ---------------------------------------------------------------------------


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ScheduleError(
            f"a schedule's name must be a non-empty string of at most {MAX_NAME} characters, "
            f"got {name!r}"
        )
    if any(c in name for c in "\r\n\t"):
        raise ScheduleError(f"a schedule's name cannot hold line breaks or tabs: {name!r}")


def _existing(ext: DurableExtension, name: str) -> ScheduleStore:
    if not schedule_store(ext).exists(name):
        raise ScheduleNotFoundError(f"no schedule named {name!r}")
    return schedule_store(ext)


def _load(store: ScheduleStore, name: str) -> tuple[ScheduleSpec, ScheduleState]:
    loaded = store.load(name)
    if loaded is None:
        raise ScheduleNotFoundError(f"no schedule named {name!r}")
    return loaded


def _described(ext: DurableExtension, name: str) -> dict[str, Any]:
    return describe(*_load(schedule_store(ext), name))


def _entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A history entry for people and JSON: ticks as datetimes."""
    shown = dict(entry)
    for key in ("tick", "last_tick"):
        if shown.get(key) is not None:
            shown[key] = to_datetime(shown[key])
    if shown.get("at") is not None:
        shown["at"] = dt.datetime.fromtimestamp(shown["at"], tz=dt.UTC)
    return shown
