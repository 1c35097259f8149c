"""`celery -A app durable schedules list|show|pause|resume|delete|trigger`.

Added to the `durable` group by `celery_durable.cli`; the helpers of
`celery_durable.cli_support`:
tables by default, `--json` for scripts, an unknown name exits non-zero
with one line.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
from celery import Celery

from ..cli_support import _json_option, _next_page, _print_json, _table, pass_app


@click.group()
def schedules() -> None:
    """Schedules (no Celery Beat): list, show, pause, resume, delete, trigger."""


@schedules.command("list")
@click.option("--limit", default=100, show_default=True, help="At most this many schedules.")
@click.option("--cursor", help="Continue after this name (printed by the previous page).")
@_json_option
@pass_app
def schedules_list(app: Celery, limit: int, cursor: str | None, as_json: bool) -> None:
    """Schedules in name order: timing, status, next fire time, last run."""
    from .api import list_schedules

    listed = list_schedules(limit=limit, after=cursor, app=app)
    next_cursor = listed[-1]["name"] if len(listed) == limit else None
    if as_json:
        _print_json({"schedules": listed, "next_cursor": next_cursor})
        return
    _table(
        ["schedule", "workflow", "when", "status", "next", "last tick", "last run", "runs"],
        [
            [
                s["name"],
                s["workflow"],
                s["when"],
                s["status"],
                _at(s["next_at"]),
                _at(s["last_tick"]),
                f"{s['last_run_id'] or '-'} ({s['last_outcome'] or '-'})",
                f"{s['runs']} started, {s['skipped']} skipped, {s['missed']} missed",
            ]
            for s in listed
        ],
    )
    _next_page(next_cursor)


@schedules.command("show")
@click.argument("name")
@click.option("--upcoming", default=5, show_default=True, help="Next fire times to show.")
@click.option("--history", default=20, show_default=True, help="Latest ticks to show.")
@_json_option
@pass_app
def schedules_show(app: Celery, name: str, upcoming: int, history: int, as_json: bool) -> None:
    """One schedule: definition, state, next fire times, latest ticks and their runs."""
    from .api import describe_schedule

    s = describe_schedule(name, upcoming=upcoming, history=history, app=app)
    if as_json:
        _print_json(s)
        return
    click.echo(f"schedule  {s['name']}  ({s['source']})")
    click.echo(f"workflow  {s['workflow']}  args {s['args']} kwargs {s['kwargs']}")
    click.echo(f"when      {s['when']}")
    if s["start_at"] or s["end_at"]:
        click.echo(f"between   {_at(s['start_at'])} and {_at(s['end_at'])}")
    click.echo(f"policies  catch_up={s['catch_up']} overlap={s['overlap']}")
    click.echo(f"status    {s['status']}")
    click.echo(f"counts    {s['runs']} started, {s['skipped']} skipped, {s['missed']} missed")
    click.echo("next      " + (", ".join(_at(t) for t in s["upcoming"]) or "-"))
    click.echo("latest ticks")
    _table(
        ["tick", "outcome", "run", "detail"],
        [
            [
                _at(e.get("tick")),
                e.get("outcome"),
                e.get("run_id"),
                _detail(e),
            ]
            for e in s["history"]
        ],
    )


@schedules.command("pause")
@click.argument("name")
@pass_app
def schedules_pause(app: Celery, name: str) -> None:
    """Stop firing (ticks that fall while paused are not run)."""
    from .api import pause_schedule

    pause_schedule(name, app=app)
    click.echo(f"schedule {name!r}: paused")


@schedules.command("resume")
@click.argument("name")
@pass_app
def schedules_resume(app: Celery, name: str) -> None:
    """Fire again, from the next tick after now."""
    from .api import resume_schedule

    s = resume_schedule(name, app=app)
    click.echo(f"schedule {name!r}: resumed; next tick {_at(s['next_at'])}")


@schedules.command("delete")
@click.argument("name")
@pass_app
def schedules_delete(app: Celery, name: str) -> None:
    """Delete the schedule and its history (its runs go on)."""
    from .api import delete_schedule

    delete_schedule(name, app=app)
    click.echo(f"schedule {name!r}: deleted")


@schedules.command("trigger")
@click.argument("name")
@_json_option
@pass_app
def schedules_trigger(app: Celery, name: str, as_json: bool) -> None:
    """Start one run of the schedule now, outside its ticks."""
    from .api import trigger_schedule

    run = trigger_schedule(name, app=app)
    if as_json:
        _print_json({"schedule": name, "run_id": run.id})
        return
    click.echo(f"schedule {name!r}: started run {run.id}")


def _at(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") + (
        f".{value.microsecond // 1000:03d}" if value.microsecond else ""
    )


def _detail(entry: dict[str, Any]) -> str:
    parts = []
    if entry.get("outcome") == "missed":
        more = "+" if entry.get("more") else ""
        parts.append(f"{entry.get('count')}{more} tick(s) up to {_at(entry.get('last_tick'))}")
    if entry.get("reason"):
        parts.append(str(entry["reason"]))
    if entry.get("note"):
        parts.append(str(entry["note"]))
    if entry.get("worker"):
        parts.append(f"by {entry['worker']}")
    return ", ".join(parts)
