"""`celery -A app durable plugins`: what each loaded plugin registers, and why a type is unknown."""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery.bin.celery import celery as celery_main
from click.testing import CliRunner


@pytest.fixture
def plugged(durable_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Redis the apps of `tests.apps.plugged` read at import (the session's)."""
    monkeypatch.setenv("DURABLE_CLI_TEST_REDIS_URL", durable_redis_url)
    from tests.apps import plugged

    assert durable_redis_url == plugged.URL


def run_cli(app: str, *args: str) -> Any:
    return CliRunner().invoke(celery_main, ["-A", f"tests.apps.plugged:{app}", "durable", *args])


def by_name(listed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {plugin["name"]: plugin for plugin in listed}


def test_plugins_lists_what_each_loaded_plugin_registers(plugged):
    result = run_cli("with_plugin", "plugins", "--json")
    assert result.exit_code == 0, result.output
    listed = by_name(json.loads(result.output))

    mine = listed["tests.plugin_for_tests"]
    assert mine["source"] == "durable_plugins"
    assert (mine["triggers"], mine["conditions"], mine["actions"]) == (
        [],
        ["weekday"],
        ["remember"],
    )
    assert mine["durable_event"] is True
    built_in = listed["celery_durable.default_plugins.triggers"]
    assert built_in["source"] == "built-in" and built_in["durable_event"] is False
    assert "task.failed" in built_in["triggers"]
    assert listed["celery_durable.default_plugins.actions"]["actions"] == [
        "retry",
        "slack",
        "webhook",
        "revoke",
    ]
    # The example plugins of plugins/ are installed in the test environment: entry points.
    pagerduty = listed["pagerduty"]
    assert (pagerduty["source"], pagerduty["package"]) == (
        "entry point",
        "celery-durable-pagerduty",
    )
    assert pagerduty["actions"] == ["pagerduty"] and pagerduty["version"]

    shown = run_cli("with_plugin", "plugins").output
    assert (
        "tests.plugin_for_tests (durable_plugins)\n"
        "  conditions:  weekday\n"
        "  actions:     remember\n"
        "  hook:        durable_event\n"
    ) in shown
    assert "pagerduty (entry point, celery-durable-pagerduty " in shown


def test_an_unknown_action_points_to_the_command_that_shows_why(plugged):
    """The app forgot its plugin: the rules do not load, and `plugins` still answers."""
    refused = run_cli("without_plugin", "rules", "list")
    assert refused.exit_code != 0
    assert "action.type: unknown action 'remember'" in refused.output
    assert "`celery -A <app> durable plugins` lists what each plugin registers" in refused.output

    result = run_cli("without_plugin", "plugins", "--json")
    assert result.exit_code == 0, result.output
    listed = by_name(json.loads(result.output))
    assert "tests.plugin_for_tests" not in listed
    assert not any("remember" in plugin["actions"] for plugin in listed.values())
