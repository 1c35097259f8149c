"""`celery -A app durable schedules ...`, through Celery's own command line."""

from __future__ import annotations

import json
from typing import Any

from celery.bin.celery import celery as celery_main
from click.testing import CliRunner

import celery_durable
from tests.steps import arithmetic


def cli(*args: str) -> Any:
    return CliRunner().invoke(
        celery_main, ["-A", "tests.apps.cli_app", "durable", "schedules", *args]
    )


def test_schedules_list_show_pause_resume_trigger_delete(cli_app):
    celery_durable.schedule(
        arithmetic, cron="0 2 * * *", timezone="Europe/Prague", name="nightly", args=(1, 2)
    )
    celery_durable.schedule(arithmetic, every="30s", name="often", args=(3, 4), overlap="skip")

    table = cli("list")
    assert table.exit_code == 0, table.output
    header, *rows = table.output.splitlines()
    assert header.split()[:4] == ["SCHEDULE", "WORKFLOW", "WHEN", "STATUS"]
    assert rows[0].startswith("nightly ") and "cron 0 2 * * * (Europe/Prague)" in rows[0]
    assert rows[1].startswith("often ") and "every 30s" in rows[1] and "active" in rows[1]

    listed = json.loads(cli("list", "--json").output)
    assert [s["name"] for s in listed["schedules"]] == ["nightly", "often"]
    assert listed["schedules"][0]["next_at"].endswith(("T00:00:00+00:00", "T01:00:00+00:00"))
    page = json.loads(cli("list", "--json", "--limit", "1").output)
    assert [s["name"] for s in page["schedules"]] == ["nightly"] and page[
        "next_cursor"
    ] == "nightly"
    rest = json.loads(cli("list", "--json", "--cursor", "nightly").output)
    assert [s["name"] for s in rest["schedules"]] == ["often"]

    shown = json.loads(cli("show", "nightly", "--json", "--upcoming", "3").output)
    assert shown["workflow"] == "tests.arithmetic" and shown["args"] == [1, 2]
    assert len(shown["upcoming"]) == 3 and shown["history"] == []

    assert cli("pause", "often").output.strip() == "schedule 'often': paused"
    assert json.loads(cli("show", "often", "--json").output)["status"] == "paused"
    triggered = cli("trigger", "often", "--json")  # a paused schedule may still be triggered
    run_id = json.loads(triggered.output)["run_id"]
    run = celery_durable.get_run(run_id)
    assert run.events()[0]["data"]["schedule"] == "often"
    text = cli("show", "often").output
    assert "status    paused" in text and "triggered" in text and run_id in text
    assert cli("resume", "often").output.startswith("schedule 'often': resumed; next tick 20")
    assert json.loads(cli("show", "often", "--json").output)["status"] == "active"

    assert cli("delete", "often").output.strip() == "schedule 'often': deleted"
    assert [s["name"] for s in json.loads(cli("list", "--json").output)["schedules"]] == ["nightly"]


def test_an_unknown_schedule_exits_non_zero_with_one_line(cli_app):
    for command in ("show", "pause", "resume", "delete", "trigger"):
        result = cli(command, "ghost")
        assert result.exit_code == 1
        assert result.output == "Error: no schedule named 'ghost'\n"
