"""`celery -A app durable ...`, run through Celery's own command line."""

from __future__ import annotations

import json
from typing import Any

from celery.bin.celery import celery as celery_main
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner

import celery_durable
from tests.steps import arithmetic


def cli(*args: str) -> Any:
    result = CliRunner().invoke(
        celery_main, ["-A", "tests.apps.cli_app", "durable", *args], catch_exceptions=False
    )
    return result


def test_runs_list_show_and_paging(cli_app):
    with start_worker(cli_app, pool="solo", perform_ping_check=False):
        runs = [celery_durable.start(arithmetic, n, 1) for n in range(3)]
        for run in runs:
            run.result(timeout=15)
    listed = cli("runs", "list", "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert [r["id"] for r in data["runs"]] == [r.id for r in reversed(runs)]  # newest first
    assert {r["status"] for r in data["runs"]} == {"completed"}

    page = json.loads(cli("runs", "list", "--json", "--limit", "2").output)
    assert len(page["runs"]) == 2 and page["next_cursor"]
    rest = json.loads(
        cli("runs", "list", "--json", "--limit", "2", "--cursor", page["next_cursor"]).output
    )
    assert [r["id"] for r in rest["runs"]] == [runs[0].id] and rest["next_cursor"] is None

    table = cli("runs", "list", "--workflow", "tests.arithmetic", "--status", "completed")
    assert table.output.splitlines()[0].split() == [
        "RUN",
        "WORKFLOW",
        "STATUS",
        "CREATED",
        "UPDATED",
    ]
    assert runs[1].id in table.output
    assert cli("runs", "list", "--status", "failed", "--json").output.count('"id"') == 0

    shown = cli("runs", "show", runs[2].id)
    assert shown.exit_code == 0
    assert "status    completed" in shown.output
    assert 'result    {"total": 3, "doubled": 6, "word": "DONE"}' in shown.output
    assert "step.completed" in shown.output and "took " in shown.output
    detail = json.loads(cli("runs", "show", runs[2].id, "--json").output)
    assert [t["type"] for t in detail["timeline"]][-1] == "workflow.completed"


def test_unknown_ids_and_names_exit_non_zero_with_one_line(cli_app):
    for args, message in [
        (("runs", "show", "nope"), "Error: no run with id 'nope'"),
        (("runs", "cancel", "nope"), "Error: no run with id 'nope'"),
        (("runs", "send-event", "nope", "approval"), "Error: no run with id 'nope'"),
        (("rules", "history", "nope"), "Error: no rule named 'nope'"),
        (("rules", "test", "nope", "--task-id", "x"), "Error: no rule named 'nope'"),
        (("runs", "list", "--cursor", "bogus"), "Error: invalid cursor 'bogus'"),
    ]:
        result = CliRunner().invoke(celery_main, ["-A", "tests.apps.cli_app", "durable", *args])
        assert result.exit_code != 0, args
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), (args, result.output)


def test_cancel_and_send_event(cli_app, durable_wait_for_status):
    from tests.test_suspend import approval, nap

    with start_worker(cli_app, pool="solo", perform_ping_check=False):
        waiting = celery_durable.start(approval)
        durable_wait_for_status(waiting, "waiting")
        sent = cli(
            "runs", "send-event", waiting.id, "approval", "--data", '{"ok": true, "by": "cli"}'
        )
        assert sent.exit_code == 0 and "delivered" in sent.output
        assert waiting.result(timeout=15) == {"approved": True, "by": "cli"}

        sleeping = celery_durable.start(nap, 3600)
        durable_wait_for_status(sleeping, "sleeping")
        assert "cancelled" in cli("runs", "cancel", sleeping.id).output
        assert sleeping.status() == "cancelled"
        assert "already finished" in cli("runs", "cancel", sleeping.id).output
    bad = CliRunner().invoke(
        celery_main,
        [
            "-A",
            "tests.apps.cli_app",
            "durable",
            "runs",
            "send-event",
            waiting.id,
            "x",
            "--data",
            "{oops",
        ],
    )
    assert bad.exit_code != 0 and "--data is not valid JSON" in bad.output


def test_rules_commands(cli_app):
    listed = json.loads(cli("rules", "list", "--json").output)
    assert [(r["name"], r["enabled"], r["breaker"]["state"]) for r in listed] == [
        ("flaky mail", True, "closed"),
        ("quiet", False, "closed"),
    ]
    event = json.dumps(
        {
            "type": "task.failed",
            "data": {
                "task_name": "mail.send",
                "error_type": "ConnectionError",
                "error_message": "down",
            },
        }
    )
    tested = cli("rules", "test", "flaky mail", "--event", event)
    assert tested.exit_code == 0
    assert "would fire  yes" in tested.output
    assert '"url": "http://127.0.0.1:9/\u2026#' in tested.output  # redacted: it holds a token
    assert "CLISECRET" not in tested.output
    report = json.loads(cli("rules", "test", "flaky mail", "--event", event, "--json").output)
    assert report["would_fire"] is True
    assert "disabled" in cli("rules", "disable", "flaky mail").output
    assert json.loads(cli("rules", "list", "--json").output)[0]["enabled"] is False
    assert (
        "would fire  no  (the rule is disabled)"
        in cli("rules", "test", "flaky mail", "--event", event).output
    )
    cli("rules", "enable", "flaky mail")
    assert "breaker closed" in cli("rules", "reset-breaker", "flaky mail").output
    history = json.loads(cli("rules", "history", "flaky mail", "--json").output)
    assert history == {"history": [], "next_cursor": None}
    notified = cli("rules", "notify-test", "flaky mail")  # nothing listens on port 9
    assert notified.exit_code == 1 and "webhook: FAILED" in notified.output
    assert "CLISECRET" not in notified.output


def test_enable_and_disable_work_whatever_the_file_says(cli_app):
    """`quiet` is written `enabled: false`; enabling it used to print success and do nothing."""
    event = json.dumps({"type": "worker.offline", "data": {"worker": "w@h"}})

    def state(name: str) -> tuple[bool, str | None]:
        (rule,) = [
            r for r in json.loads(cli("rules", "list", "--json").output) if r["name"] == name
        ]
        return rule["enabled"], rule["switch"]

    assert state("quiet") == (False, None)
    enabled = cli("rules", "enable", "quiet")
    assert enabled.exit_code == 0
    assert "enabled by a stored switch (its file says enabled: false" in enabled.output
    assert state("quiet") == (True, "on")
    assert "yes (switch)" in cli("rules", "list").output
    assert "would fire  yes" in cli("rules", "test", "quiet", "--event", event).output
    cleared = cli("rules", "clear-switch", "quiet")
    assert "switch cleared; disabled as its file says (enabled: false)" in cleared.output
    assert state("quiet") == (False, None)
    assert "the rule is disabled" in cli("rules", "test", "quiet", "--event", event).output
    cli("rules", "disable", "flaky mail")  # a rule the file enables, switched off
    assert state("flaky mail") == (False, "off")


def test_workers_lists_live_workers(cli_app):
    with start_worker(cli_app, pool="solo", perform_ping_check=False) as worker:
        listed = json.loads(cli("workers", "--json").output)
        table = cli("workers").output
    assert [w["worker"] for w in listed] == [worker.hostname]
    assert listed[0]["alive"] is True and listed[0]["heartbeat_age"] < 5
    assert worker.hostname in table and "alive" in table


def test_stuck_runs_are_listed_and_resumed(cli_app, redis_client):
    from celery_durable.extension import extension_for

    ext = extension_for(cli_app)
    # Recorded as start() would, but its message and its dispatch timer are gone.
    data = {"name": "tests.arithmetic", "args": [1, 2], "kwargs": {}}
    ext.journal.create("stuck-1", "tests.arithmetic", data)
    table = cli("runs", "list", "--status", "stuck")
    assert table.output.splitlines()[0].split() == ["RUN", "WORKFLOW", "STATUS", "UPDATED", "WHY"]
    assert "stuck-1" in table.output and "no dispatch timer" in table.output
    listed = json.loads(cli("runs", "list", "--status", "stuck", "--json").output)
    assert [r["id"] for r in listed["runs"]] == ["stuck-1"]

    resumed = cli("runs", "resume", "stuck-1")
    assert resumed.exit_code == 0 and "sent again" in resumed.output
    assert redis_client.zscore(ext.keys.timers(), "dispatch:stuck-1") is not None
    assert json.loads(cli("runs", "list", "--status", "stuck", "--json").output)["runs"] == []
    again = cli("runs", "resume", "stuck-1")  # no longer stuck: nothing done
    assert again.exit_code == 0 and "not stuck: nothing done" in again.output
    with start_worker(cli_app, pool="solo", perform_ping_check=False):
        assert celery_durable.get_run("stuck-1").result(timeout=15)["total"] == 3
    missing = CliRunner().invoke(
        celery_main, ["-A", "tests.apps.cli_app", "durable", "runs", "resume", "nope"]
    )
    assert missing.exit_code != 0 and missing.output.strip() == "Error: no run with id 'nope'"
