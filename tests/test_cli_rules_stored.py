"""`celery -A app durable rules add|delete|export|changes`, and `rules list` with stored rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery.bin.celery import celery as celery_main
from click.testing import CliRunner

from celery_durable.plugins import make_plugin_manager
from celery_durable.rules.loader import load_rules
from celery_durable.rules.registry import PartRegistry

APP = "tests.apps.cli_app"

RULE_YAML = """
name: billing timeouts
trigger:
  event: task.failed
  conditions:
    task_name_pattern: "billing.*"
action:
  type: webhook
  url: http://127.0.0.1:9/billing
"""

TWO_RULES_YAML = """
- name: first stored
  trigger: {event: task.failed}
  action: {type: webhook, url: "http://127.0.0.1:9/a"}
- name: second stored
  trigger: {event: worker.offline}
  action: {type: webhook, url: "http://127.0.0.1:9/b"}
"""

BAD_YAML = """
- name: bad regex
  trigger:
    event: task.failed
    conditions: {error_pattern: "(unclosed"}
  action: {type: webhook, url: "http://127.0.0.1:9/a"}
- name: flaky mail
  trigger: {event: task.exploded}
  action: {type: teleport}
"""


@pytest.fixture
def cli_redis(durable_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DURABLE_CLI_TEST_REDIS_URL", durable_redis_url)
    from tests.apps import cli_app

    assert durable_redis_url == cli_app.URL
    return durable_redis_url


def cli(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(celery_main, ["-A", APP, "durable", *args], input=input)


def listed() -> dict[str, dict[str, Any]]:
    result = cli("rules", "list", "--json")
    assert result.exit_code == 0, result.output
    return {r["name"]: r for r in json.loads(result.output)}


def test_add_from_a_file_and_stdin_list_and_export(cli_redis, tmp_path: Path):
    path = tmp_path / "rule.yaml"
    path.write_text(RULE_YAML)
    added = cli("rules", "add", str(path))
    assert added.exit_code == 0, added.output
    assert added.output.strip() == "rule 'billing timeouts': added (rules version 1)"
    from_stdin = cli("rules", "add", "-", input=TWO_RULES_YAML)
    assert from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.output.splitlines() == [
        "rule 'first stored': added (rules version 2)",
        "rule 'second stored': added (rules version 2)",
    ]
    again = cli("rules", "add", str(path))
    assert again.output.strip() == "rule 'billing timeouts': unchanged (rules version 2)"

    rules = listed()
    assert {n: r["source"] for n, r in rules.items()} == {
        "flaky mail": "config",
        "quiet": "config",
        "billing timeouts": "stored",
        "first stored": "stored",
        "second stored": "stored",
    }
    table = cli("rules", "list").output
    assert table.splitlines()[0].split()[:3] == ["RULE", "SOURCE", "TRIGGER"]
    assert "billing timeouts  stored" in table

    exported = cli("rules", "export")
    assert exported.exit_code == 0, exported.output
    specs = yaml.safe_load(exported.output)
    assert [s["name"] for s in specs] == [
        "flaky mail",
        "quiet",
        "billing timeouts",
        "first stored",
        "second stored",
    ]
    assert specs[2] == yaml.safe_load(RULE_YAML)
    registry = PartRegistry.collect(make_plugin_manager())
    assert len(load_rules(specs, registry)) == 5


def test_a_refused_file_changes_nothing_and_names_file_rule_and_field(cli_redis, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    result = cli("rules", "add", str(path))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == f"Error: file {str(path)!r} has 4 problem(s):"
    assert any(
        "rule 'bad regex' (#1): trigger.conditions.error_pattern: invalid regular" in line
        for line in lines
    ), result.output
    assert any("rule 'flaky mail' (#2): trigger.event: unknown trigger" in line for line in lines)
    assert any("rule 'flaky mail' (#2): action.type: unknown action" in line for line in lines)
    assert any(
        "rule 'flaky mail' (#2): name: 'flaky mail' is the name of a rule" in x for x in lines
    )
    assert set(listed()) == {"flaky mail", "quiet"}
    assert json.loads(cli("rules", "changes", "--json").output)["changes"] == []

    config_name = cli("rules", "add", "-", input=RULE_YAML.replace("billing timeouts", "quiet"))
    assert config_name.exit_code == 1
    assert "rule 'quiet' (#1): name: 'quiet' is the name of a rule in durable_rules" in (
        config_name.output
    )
    for bad, message in [
        ("- [unclosed", "is not valid YAML"),
        ("42", "must hold a rule (a mapping) or a list of rules, got int"),
        ("", "holds no rule"),
        ("[]", "holds no rule"),
    ]:
        result = cli("rules", "add", "-", input=bad)
        assert result.exit_code == 1 and message in result.output, result.output
    missing = cli("rules", "add", str(tmp_path / "missing.yaml"))
    assert missing.exit_code == 1 and "cannot read it" in missing.output


def test_delete_switch_and_the_changes_listing(cli_redis):
    cli("rules", "add", "-", input=TWO_RULES_YAML)
    deleted = cli("rules", "delete", "first stored")
    assert deleted.exit_code == 0 and deleted.output.strip() == "rule 'first stored': deleted"
    for name, message in [
        ("first stored", "Error: no stored rule named 'first stored'; stored rules: second stored"),
        ("flaky mail", "Error: rule 'flaky mail' comes from durable_rules"),
    ]:
        result = cli("rules", "delete", name)
        assert result.exit_code == 1 and result.output.startswith(message), result.output
        assert len(result.output.strip().splitlines()) == 1

    # A rule the configuration wrote `enabled: false` is switched on, and shows it.
    assert listed()["quiet"]["enabled"] is False
    assert cli("rules", "enable", "quiet").exit_code == 0
    assert listed()["quiet"]["enabled"] is True and listed()["quiet"]["switch"] == "on"
    assert cli("rules", "disable", "second stored").exit_code == 0
    assert listed()["second stored"]["enabled"] is False

    everything = json.loads(cli("rules", "changes", "--json").output)
    assert [(c["action"], c["rule"]) for c in everything["changes"]] == [
        ("disable", "second stored"),
        ("enable", "quiet"),
        ("delete", "first stored"),
        ("add", "second stored"),
        ("add", "first stored"),
    ]
    assert everything["next_cursor"] is None
    one = json.loads(cli("rules", "changes", "first stored", "--json").output)["changes"]
    assert [c["action"] for c in one] == ["delete", "add"]
    assert one[0]["before"]["name"] == "first stored" and one[0]["after"] is None

    page = json.loads(cli("rules", "changes", "--json", "--limit", "2").output)
    assert len(page["changes"]) == 2 and page["next_cursor"]
    rest = json.loads(
        cli("rules", "changes", "--json", "--limit", "3", "--cursor", page["next_cursor"]).output
    )
    assert [c["id"] for c in page["changes"] + rest["changes"]] == [
        c["id"] for c in everything["changes"]
    ]
    table = cli("rules", "changes")
    assert table.output.splitlines()[0].split() == ["TIME", "CHANGE", "RULE", "VERSION", "BY"]
    assert "disable" in table.output and "second stored" in table.output
    bad = cli("rules", "changes", "--cursor", "nope")
    assert bad.exit_code == 1 and "invalid cursor" in bad.output


def test_rules_list_shows_a_stored_rule_that_does_not_load_here(cli_redis):
    """Stored by a process with a plugin the CLI's app lacks: listed with its problem."""
    import redis as redis_lib

    from celery_durable.keys import Keys
    from celery_durable.rules.store import RuleStore

    client = redis_lib.Redis.from_url(cli_redis)
    try:
        teleport = {"name": "teleport", "trigger": {"event": "task.failed"}}
        RuleStore(client, Keys()).write({"teleport": {**teleport, "action": {"type": "teleport"}}})
    finally:
        client.close()
    result = cli("rules", "list")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("teleport"))
    assert row.split()[:4] == ["teleport", "stored", "task.failed", "no"]
    assert "stored rules not loaded (the other rules run):" in result.output
    assert "rule 'teleport' here: action.type: unknown action 'teleport'" in result.output
    assert listed()["teleport"]["problems"][0]["field"] == "action.type"
