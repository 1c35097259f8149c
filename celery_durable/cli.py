"""`celery -A app durable ...`: runs, rules and workers from the command line.

Registered through the `celery.commands` entry point, so Celery's own `-A`
names the app. Tables for people by default, `--json` for scripts; an unknown
id or name, a bad cursor or an unreachable Redis exits non-zero with a
one-line error (bad rules: one line per problem), never a traceback;
listings are paged with `--limit` and `--cursor`.

Every command is written `@pass_app` and receives the app first: the one
place that finds it (`ctx.obj.app`, as Celery's own commands and flower's do)
and turns what goes wrong into one line. Commands hand the app on as `app=`,
like any caller of the Python API.
"""

from __future__ import annotations

import json

import click
from celery import Celery

from .cli_support import (
    _app,
    _first_line,
    _history_cursor,
    _json_option,
    _jsonable,
    _next_page,
    _print_json,
    _table,
    _when,
    pass_app,
)
from .rules import cli as _stored_rules_cli
from .schedules.cli import schedules


@click.group(name="durable")
@click.pass_context
def durable(ctx: click.Context) -> None:
    """celery_durable: durable workflow runs, automation rules, schedules, workers."""
    _app(ctx)  # fail early and clearly without -A


# -- runs ---------------------------------------------------------------------------


@durable.group()
def runs() -> None:
    """List, inspect, cancel runs and send them events."""


@runs.command("list")
@click.option("--workflow", help="Only runs of this workflow.")
@click.option(
    "--status",
    help="Only runs with this status (running, sleeping, ...), or 'stuck': runs left "
    "without an owner or a timer (see `runs resume`).",
)
@click.option("--limit", default=50, show_default=True, help="At most this many runs.")
@click.option("--cursor", help="Continue a previous listing.")
@_json_option
@pass_app
def runs_list(
    app: Celery,
    workflow: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Runs, newest first."""
    from .workflows.listing import list_runs

    if status == "stuck":
        _list_stuck(app, limit, cursor, as_json)
        return

    found, next_cursor = list_runs(
        workflow=workflow, status=status, limit=limit, cursor=cursor, app=app
    )
    if as_json:
        _print_json({"runs": found, "next_cursor": next_cursor})
        return
    _table(
        ["run", "workflow", "status", "created", "updated"],
        [
            [r["id"], r["workflow"], r["status"], _when(r["created_at"]), _when(r["updated_at"])]
            for r in found
        ],
    )
    _next_page(next_cursor)


def _list_stuck(app: Celery, limit: int, cursor: str | None, as_json: bool) -> None:
    from .workflows.stuck import list_stuck

    found, next_cursor = list_stuck(limit=limit, cursor=cursor, app=app)
    if as_json:
        _print_json({"runs": found, "next_cursor": next_cursor})
        return
    _table(
        ["run", "workflow", "status", "updated", "why"],
        [[r["id"], r["workflow"], r["status"], _when(r["updated_at"]), r["reason"]] for r in found],
    )
    _next_page(next_cursor)


@runs.command("resume")
@click.argument("run_id")
@pass_app
def runs_resume(app: Celery, run_id: str) -> None:
    """Send a stuck or blocked run on; a run that is fine is left alone.

    A blocked run is tried again by a worker: it goes on if its history
    replays under that worker's code, else it stays blocked.
    """
    from .workflows.stuck import resume_run

    click.echo(resume_run(run_id, app=app))


@runs.command("fail")
@click.argument("run_id")
@pass_app
def runs_fail(app: Celery, run_id: str) -> None:
    """End a blocked run as failed, with the error it was blocked for."""
    from .workflows.blocking import fail_run

    click.echo(fail_run(run_id, app=app))


@runs.command("export")
@click.argument("run_id")
@pass_app
def runs_export(app: Celery, run_id: str) -> None:
    """Print a run's history as JSON (for the `durable_replay` pytest fixture)."""
    from .workflows.replay import export_run

    _print_json(export_run(run_id, app=app))


@durable.command("replay-check")
@click.option("--workflow", help="Only runs of this workflow.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    help="Only runs with this status (repeat it); by default every unfinished status.",
)
@click.option("--limit", type=int, help="Replay at most this many runs (the newest first).")
@_json_option
@pass_app
def replay_check_command(
    app: Celery, workflow: str | None, statuses: tuple[str, ...], limit: int | None, as_json: bool
) -> None:
    """Replay stored runs against the code importable here; exit 1 if any would diverge.

    Runs no step body and writes nothing: run it in CI, against a copy of
    production's Redis or production itself, before deploying.
    """
    from .workflows.replay import UNFINISHED, replay_check

    report = replay_check(workflow=workflow, statuses=statuses or UNFINISHED, limit=limit, app=app)
    summary = report.as_dict()
    if as_json:
        _print_json(summary)
    else:
        if report.divergences:
            _table(
                ["run", "workflow", "status", "position", "recorded", "code asks"],
                [
                    [
                        d.run_id,
                        d.workflow,
                        d.status,
                        "-" if d.position is None else d.position,
                        d.recorded or "-",
                        d.asked or d.message,
                    ]
                    for d in report.divergences
                ],
            )
            click.echo("")
        click.echo(
            f"{summary['checked']:,} run(s) replayed in {summary['seconds']:.3f}s "
            f"({summary['seconds_per_1000_runs']:.3f}s per 1,000): "
            f"{summary['diverging']:,} would diverge"
        )
    if report.divergences:
        raise SystemExit(1)


@runs.command("show")
@click.argument("run_id")
@click.option(
    "--limit", default=200, show_default=True, help="At most this many events of the timeline."
)
@click.option("--cursor", help="Continue the timeline where a previous page ended.")
@_json_option
@pass_app
def runs_show(app: Celery, run_id: str, limit: int, cursor: str | None, as_json: bool) -> None:
    """A run's status, timeline of events (paged), and result or error."""
    from .workflows.listing import describe_run

    run = describe_run(run_id, limit=limit, cursor=cursor, app=app)
    if as_json:
        _print_json(run)
        return
    click.echo(f"run       {run['id']}")
    click.echo(f"workflow  {run['workflow']}")
    click.echo(f"status    {run['status']}")
    click.echo(f"created   {_when(run['created_at'])}")
    if run.get("idempotency_key"):
        click.echo(f"key       {run['idempotency_key']}")
    if run.get("parent"):
        click.echo(f"parent    {run['parent']}")
    click.echo(
        f"args      {json.dumps(run['args'], default=_jsonable)} "
        f"{json.dumps(run['kwargs'], default=_jsonable)}"
    )
    if "result" in run:
        click.echo(f"result    {json.dumps(run['result'], default=_jsonable)}")
    if "error" in run:
        click.echo(f"error     {run['error']}")
    click.echo(f"events    {run['events']:,}")
    click.echo("timeline")
    rows = []
    for item in run["timeline"]:
        detail = []
        if item.get("attempt"):
            detail.append(f"attempt {item['attempt']}")
        if item.get("duration") is not None:
            detail.append(f"took {item['duration'] * 1000:.1f} ms")
        if item.get("delay") is not None:
            detail.append(f"retry in {item['delay']:g}s")
        if item.get("until"):
            detail.append(f"until {_when(item['until'])}")
        if item.get("queue") and item["type"] != "step.dispatched":
            detail.append(f"queue {item['queue']}")
        elif item.get("queue"):
            detail.append(f"to queue {item['queue']}")
        if item.get("worker"):
            detail.append(f"on {item['worker']}")
        if item.get("error"):
            detail.append(item["error"])
        rows.append(
            [
                f"+{item['offset'] * 1000:.0f} ms",
                item["type"],
                item.get("name", ""),
                ", ".join(detail),
            ]
        )
    _table(["time", "event", "name", "detail"], rows)
    if run["timeline"] and (cursor or run["next_cursor"]):
        first, last = run["timeline"][0]["seq"], run["timeline"][-1]["seq"]
        click.echo(f"\nevents {first:,}-{last:,} of {run['events']:,}")
    if run.get("steps_in_flight"):
        click.echo("\nsteps in flight")
        _table(
            ["position", "step", "queue", "attempt", "state", "worker", "since"],
            [
                [
                    s["position"],
                    s["name"],
                    s["queue"] or "",
                    s["attempt"],
                    s["state"],
                    s["worker"] or "-",
                    _when(s["since"]) if s["since"] else "-",
                ]
                for s in run["steps_in_flight"]
            ],
        )
    _next_page(run["next_cursor"])


@runs.command("cancel")
@click.argument("run_id")
@pass_app
def runs_cancel(app: Celery, run_id: str) -> None:
    """Cancel a run (a running one stops at its next step)."""
    from .workflows.control import cancel_run

    if cancel_run(run_id, app=app):
        click.echo(f"run {run_id}: cancelled (a running run stops at its next step)")
    else:
        click.echo(f"run {run_id}: already finished, nothing to cancel")


@runs.command("send-event")
@click.argument("run_id")
@click.argument("name")
@click.option("--data", default="null", help="The event's payload, as JSON.")
@pass_app
def runs_send_event(app: Celery, run_id: str, name: str, data: str) -> None:
    """Deliver an event to a run (kept until the run waits for it)."""
    from .workflows.control import send_event

    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"--data is not valid JSON: {exc}") from None
    send_event(run_id, name, payload, app=app)
    click.echo(f"run {run_id}: event {name!r} delivered")


# -- rules ------------------------------------------------------------------------------


@durable.group()
def rules() -> None:
    """List, add, delete, export, test and operate automation rules."""


@rules.command("list")
@_json_option
@pass_app
def rules_list(app: Celery, as_json: bool) -> None:
    """Rules (configuration and stored): enabled state, breaker state, last fired, problems."""
    from .rules.api import list_rules

    listed = list_rules(app=app)
    if as_json:
        _print_json(listed)
        return
    _table(
        ["rule", "source", "trigger", "enabled", "breaker", "last fired", "outcome"],
        [
            [
                r["name"],
                r["source"],
                r["event"],
                ("yes" if r["enabled"] else "no") + (" (switch)" if r["switch"] else ""),
                f"{r['breaker']['state']} ({r['breaker']['executions']}/"
                f"{r['breaker']['max_executions']})"
                if r["breaker"]
                else "-",
                _when(r["last_fired"]),
                r["last_outcome"],
            ]
            for r in listed
        ],
    )
    problems = [(r["name"], p) for r in listed for p in r["problems"]]
    if problems:
        click.echo("\nstored rules not loaded (the other rules run):")
        for name, problem in problems:
            where = f" on {problem['worker']}" if problem.get("worker") else " here"
            field = f"{problem['field']}: " if problem.get("field") else ""
            click.echo(f"  rule {name!r}{where}: {field}{problem['message']}")


@rules.command("test")
@click.argument("name")
@click.option("--event", "event_json", help='The event as JSON: {"type": ..., "data": {...}}.')
@click.option("--task-id", help="Use the last event about this task from the journal.")
@_json_option
@pass_app
def rules_test(
    app: Celery, name: str, event_json: str | None, task_id: str | None, as_json: bool
) -> None:
    """Dry run: would the rule fire, and what would it do? Sends nothing."""
    from .rules.dry_run import dry_run

    if (event_json is None) == (task_id is None):
        raise click.ClickException("give either --event JSON or --task-id ID")
    event = None
    if event_json is not None:
        try:
            event = json.loads(event_json)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"--event is not valid JSON: {exc}") from None
    try:
        report = dry_run(name, event, task_id=task_id, app=app)
    except (TypeError, AttributeError, KeyError) as exc:  # a hand-written event's shape
        raise click.ClickException(
            f"the event does not have the shape of a real one ({type(exc).__name__}: "
            f"{_first_line(exc)}); compare with `--task-id` on a past task"
        ) from None
    if as_json:
        _print_json(report.as_dict())
        return
    click.echo(f"rule      {report.rule}")
    click.echo(
        f"would fire  {'yes' if report.would_fire else 'no'}"
        + (f"  ({report.reason})" if report.reason else "")
    )
    if report.breaker:
        b = report.breaker
        click.echo(
            f"breaker   {b['state']} ({b['executions']}/{b['max_executions']} in "
            f"{b['window_seconds']:g}s)"
        )
    for condition in report.conditions:
        mark = "ok " if condition["holds"] else "NO "
        click.echo(f"  {mark} {condition['condition']}: {condition['why']}")
    for index, action in enumerate(report.actions, start=1):
        shown = json.dumps(action, default=_jsonable, ensure_ascii=False)
        click.echo(f"action {index}: {shown}")


@rules.command("history")
@click.argument("name")
@click.option("--limit", default=20, show_default=True)
@click.option("--cursor", callback=_history_cursor, help="Continue a previous listing.")
@_json_option
@pass_app
def rules_history(app: Celery, name: str, limit: int, cursor: str | None, as_json: bool) -> None:
    """The rule's matched evaluations, newest first."""
    from .rules.api import rule_history

    if not 1 <= limit <= 1000:
        raise click.ClickException("--limit must be between 1 and 1000")
    entries = rule_history(name, limit=limit, before=cursor, app=app)
    next_cursor = entries[-1]["id"] if len(entries) == limit else None
    if as_json:
        _print_json({"history": entries, "next_cursor": next_cursor})
        return
    rows = []
    for entry in entries:
        actions = ", ".join(
            f"{a['type']}:{'skipped' if a.get('skipped') else 'ok' if a['ok'] else 'failed'}"
            for a in entry.get("actions", [])
        )
        data = entry["event"].get("data", {})
        subject = data.get("task_name") or data.get("workflow_name") or data.get("worker")
        rows.append(
            [
                _when(entry["ts"]),
                entry["event"]["type"],
                subject,
                entry["outcome"],
                entry.get("breaker", {}).get("state"),
                actions or entry.get("reason"),
            ]
        )
    _table(["time", "event", "subject", "outcome", "breaker", "actions"], rows)
    _next_page(next_cursor)


@rules.command("reset-breaker")
@click.argument("name")
@pass_app
def rules_reset_breaker(app: Celery, name: str) -> None:
    """Close the rule's circuit breaker now."""
    from .rules.api import reset_breaker

    reset_breaker(name, app=app)
    click.echo(f"rule {name!r}: breaker closed")


@rules.command("enable")
@click.argument("name")
@pass_app
def rules_enable(app: Celery, name: str) -> None:
    """Switch a rule on in every worker, whatever its file says."""
    _switch_rule(app, name, enabled=True)


@rules.command("disable")
@click.argument("name")
@pass_app
def rules_disable(app: Celery, name: str) -> None:
    """Switch a rule off in every worker, whatever its file says."""
    _switch_rule(app, name, enabled=False)


@rules.command("clear-switch")
@click.argument("name")
@pass_app
def rules_clear_switch(app: Celery, name: str) -> None:
    """Forget enable/disable: the rule's `enabled:` in its file decides again."""
    _switch_rule(app, name, enabled=None)


def _switch_rule(app: Celery, name: str, *, enabled: bool | None) -> None:
    from .rules.api import list_rules, set_rule_enabled

    set_rule_enabled(name, enabled, app=app)
    (rule,) = [r for r in list_rules(app=app) if r["name"] == name]
    in_file = "true" if rule["enabled_in_file"] else "false"
    if enabled is None:
        state = "enabled" if rule["enabled"] else "disabled"
        click.echo(f"rule {name!r}: switch cleared; {state} as its file says (enabled: {in_file})")
        return
    click.echo(
        f"rule {name!r}: {'enabled' if enabled else 'disabled'} by a stored switch "
        f"(its file says enabled: {in_file}; `rules clear-switch` returns to that)"
    )


@rules.command("notify-test")
@click.argument("name")
@pass_app
def rules_notify_test(app: Celery, name: str) -> None:
    """Send the rule's notifications once, now, with sample data."""
    from .rules.dry_run import send_test_notification

    results = send_test_notification(name, app=app)
    for result in results:
        state = "sent" if result["ok"] else f"FAILED: {result['error']}"
        click.echo(f"{result['type']}: {state}")
    if not all(r["ok"] for r in results):
        raise click.exceptions.Exit(1)


# -- workers ------------------------------------------------------------------------------


@durable.command("workers")
@_json_option
@pass_app
def workers(app: Celery, as_json: bool) -> None:
    """Live workers: heartbeat age and what each is running (runs, steps, tasks)."""
    from .workflows.listing import list_workers

    listed = list_workers(app=app)
    if as_json:
        _print_json(listed)
        return
    _table(
        ["worker", "heartbeat", "state", "runs", "steps", "tasks"],
        [
            [
                w["worker"],
                f"{w['heartbeat_age']:.1f}s ago",
                "alive" if w["alive"] else "silent",
                " ".join(w["runs"]) or "-",
                " ".join(w["steps"]) or "-",
                " ".join(w["tasks"]) or "-",
            ]
            for w in listed
        ],
    )


# -- web ----------------------------------------------------------------------------------


@durable.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=5566, show_default=True, type=int, help="Port to serve on.")
@pass_app
def web(app: Celery, host: str, port: int) -> None:
    """Serve the dashboard, the JSON API (/api/) and webhook URLs (/hooks/)."""
    from .web.command import serve

    serve(app, host, port)


# -- plugins ------------------------------------------------------------------------------


@durable.command("plugins")
@_json_option
@pass_app
def plugins(app: Celery, as_json: bool) -> None:
    """Loaded plugins and what each registers: why a rule's type may be unknown."""
    from .extension import extension_for
    from .plugins import describe_plugins, plugin_manager

    listed = describe_plugins(plugin_manager(extension_for(app)))
    if as_json:
        _print_json(listed)
        return
    for plugin in listed:
        origin = plugin["source"]
        if plugin["package"]:
            origin += f", {plugin['package']} {plugin['version']}"
        click.echo(f"{plugin['name']} ({origin})")
        for kind in ("triggers", "conditions", "actions"):
            if plugin[kind]:
                click.echo(f"  {kind + ':':<12} {', '.join(plugin[kind])}")
        if plugin["durable_event"]:
            click.echo(f"  {'hook:':<12} durable_event")


# -- schedules (celery_durable/schedules/cli.py: kept there so this module stays small) -----

durable.add_command(schedules)

# -- stored rules (celery_durable/rules/cli.py: add, delete, export, changes) ------------

for _command in _stored_rules_cli.COMMANDS:
    rules.add_command(_command)
