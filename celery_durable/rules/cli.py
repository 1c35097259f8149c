"""`celery -A app durable rules add|delete|export|changes`: the stored rules.

Added to the `rules` group by `celery_durable.cli`; helpers of `cli_support`. A
refused change changes nothing and exits non-zero with every problem, one
per line, each naming the file, the rule and the field; never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from celery import Celery

from ..cli_support import (
    _history_cursor,
    _json_option,
    _next_page,
    _print_json,
    _table,
    _when,
    pass_app,
)
from ..errors import RulesError
from ..rules.loader import parse_yaml


def read_rules_file(path: str) -> tuple[Any, str]:
    """The rules a YAML file holds (one rule, a list, or `rules:` and a list), and its name."""
    source = "stdin" if path == "-" else f"file {path!r}"
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as file:
                text = file.read()
    except OSError as exc:
        raise RulesError([f"cannot read it: {exc.strerror}"], source) from None
    except UnicodeDecodeError as exc:
        raise RulesError([f"is not UTF-8 text: {exc}"], source) from None
    loaded = parse_yaml(text, source)
    if isinstance(loaded, dict) and set(loaded) == {"rules"}:
        loaded = loaded["rules"]
    if loaded is None or loaded == []:
        raise RulesError(["holds no rule"], source)
    if not isinstance(loaded, dict | list):
        raise RulesError(
            [f"must hold a rule (a mapping) or a list of rules, got {type(loaded).__name__}"],
            source,
        )
    return loaded, source


@click.command("add")
@click.argument("file")
@pass_app
def rules_add(app: Celery, file: str) -> None:
    """Store the rules of a YAML FILE (`-`: stdin); every worker runs them within a second.

    FILE holds one rule or a list. A stored rule of the same name is
    replaced; a name from durable_rules is refused. With any problem,
    nothing is stored.
    """
    from .api import save_rules

    rules, source = read_rules_file(file)
    for saved in save_rules(rules, app=app, source=source):
        click.echo(f"rule {saved['name']!r}: {saved['change']} (rules version {saved['version']})")


@click.command("delete")
@click.argument("name")
@pass_app
def rules_delete(app: Celery, name: str) -> None:
    """Delete a stored rule; every worker stops running it within a second."""
    from .api import delete_rule

    delete_rule(name, app=app)
    click.echo(f"rule {name!r}: deleted")


@click.command("export")
@pass_app
def rules_export(app: Celery) -> None:
    """Print every rule (configuration and stored) as YAML that `rules add` or
    durable_rules loads again."""
    from .api import export_rules

    click.echo(export_rules(app=app), nl=False)


@click.command("changes")
@click.argument("name", required=False)
@click.option("--limit", default=20, show_default=True)
@click.option("--cursor", callback=_history_cursor, help="Continue a previous listing.")
@_json_option
@pass_app
def rules_changes(
    app: Celery, name: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """Changes to the rules (of rule NAME, or all), newest first: when, what, who."""
    from .api import rule_changes

    if not 1 <= limit <= 1000:
        raise click.ClickException("--limit must be between 1 and 1000")
    changes = rule_changes(name, limit=limit, before=cursor, app=app)
    next_cursor = changes[-1]["id"] if len(changes) == limit else None
    if as_json:
        _print_json({"changes": changes, "next_cursor": next_cursor})
        return
    _table(
        ["time", "change", "rule", "version", "by"],
        [
            [_when(c["ts"]), c["action"], c["rule"], c["version"], f"{c['user']}@{c['host']}"]
            for c in changes
        ],
    )
    _next_page(next_cursor)


COMMANDS: list[click.Command] = [rules_add, rules_delete, rules_export, rules_changes]
