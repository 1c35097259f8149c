"""The command line with bad input or no Redis: one line (a line per rule problem), exit 1.

Each case drives the real CLI: Celery's own command line through click's
CliRunner, or a `celery` subprocess when the app must see another Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.bin.celery import celery as celery_main
from click.testing import CliRunner

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli_redis(durable_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Redis the CLI test apps read at import (the session's, the same for every test)."""
    monkeypatch.setenv("DURABLE_CLI_TEST_REDIS_URL", durable_redis_url)
    from tests.apps import cli_app, cli_errors

    assert cli_app.URL == cli_errors.URL == durable_redis_url
    return durable_redis_url


def run_cli(app: str, *args: str):
    return CliRunner().invoke(celery_main, ["-A", app, "durable", *args])


def one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("cursor", ["nan", "inf", "-inf", "abc"])
def test_runs_list_refuses_a_cursor_it_did_not_give(cli_redis, cursor):
    line = one_line_error(run_cli("tests.apps.cli_app", "runs", "list", "--cursor", cursor))
    assert line == f"Error: invalid cursor {cursor!r}: pass back the one a listing gave"


@pytest.mark.parametrize("cursor", ["abc", "0-0", "+", "-", "", " ", "12-x"])
def test_rules_history_refuses_a_cursor_it_did_not_give(cli_redis, cursor):
    result = run_cli("tests.apps.cli_app", "rules", "history", "flaky mail", "--cursor", cursor)
    line = one_line_error(result)
    assert line == f"Error: invalid cursor {cursor!r}: pass back the one a listing gave"


@pytest.mark.parametrize("command", [["history", "flaky mail"], ["changes"]])
@pytest.mark.parametrize("limit", ["0", "1001"])
def test_rule_listings_refuse_a_limit_out_of_range_in_one_line(cli_redis, command, limit):
    result = run_cli("tests.apps.cli_app", "rules", *command, "--limit", limit)
    assert one_line_error(result) == "Error: --limit must be between 1 and 1000"


def test_rules_history_takes_a_real_cursor(cli_redis):
    result = run_cli(
        "tests.apps.cli_app", "rules", "history", "flaky mail", "--cursor", "1-0", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"history": [], "next_cursor": None}


@pytest.mark.parametrize(
    "message",
    [{"retry": "x"}, "a string", {"retry": {"attempt": "two"}}, ["a", "list"]],
)
def test_rules_test_with_a_malformed_event_is_one_line(cli_redis, message):
    event = {
        "type": "task.failed",
        "data": {"task_name": "mail.send", "error_type": "ConnectionError", "message": message},
    }
    result = run_cli(
        "tests.apps.cli_errors:retrying",
        "rules",
        "test",
        "retry mail",
        "--event",
        json.dumps(event),
    )
    one_line_error(result)


def test_rules_list_with_bad_rules_prints_every_problem(cli_redis):
    result = run_cli("tests.apps.cli_errors:broken", "rules", "list")
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert lines[0] == "Error: durable_rules has 2 problem(s):", result.output
    assert any("rule 'first' (#1)" in line and "task.exploded" in line for line in lines)
    assert any("rule 'second' (#2)" in line and "'delay'" in line for line in lines)
    assert "Traceback" not in result.output


def test_an_unreachable_redis_is_one_line_within_seconds(tmp_path):
    """A subprocess: the app module reads its Redis URL (a closed port) at import."""
    env = {
        **os.environ,
        "DURABLE_CLI_TEST_REDIS_URL": "redis://127.0.0.1:1/0",
        "PYTHONPATH": str(REPO_ROOT),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.apps.cli_app", "durable", "runs", "list"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip().splitlines()
    assert output == [
        "Error: cannot reach the journal's Redis at redis://127.0.0.1:1/0: "
        "Error 111 connecting to 127.0.0.1:1. Connection refused."
    ], output
    assert elapsed < 15, f"took {elapsed:.1f}s"
