"""A run's history is bounded (durable_max_run_events) and shown a page at a time."""

from __future__ import annotations

import json
from typing import Any

import pytest

import celery_durable
from celery_durable import sleep, step, workflow
from celery_durable.errors import ConfigurationError, RunEventLimitError
from celery_durable.extension import extension_for
from celery_durable.workflows.listing import describe_run

LIMIT = 19


@step
def tick(n: int) -> int:
    return n


@workflow(name="tests.limit.forever")
def forever() -> None:
    n = 0
    while True:
        n = tick(n + 1)


@workflow(name="tests.limit.stubborn")
def stubborn() -> int:
    n = 0
    while n < 1000:
        try:
            n = tick(n + 1)
        except Exception:  # swallowing the limit does not save the run
            n += 1
    return n


@workflow(name="tests.limit.napper")
def napper() -> None:
    while True:
        sleep(0.05)


class TestEventLimit:
    @pytest.fixture
    def durable_app_config(self) -> dict[str, Any]:
        return {"durable_max_run_events": LIMIT}

    def assert_failed_at_the_limit(self, run: Any) -> None:
        with pytest.raises(Exception, match="durable_max_run_events") as info:
            run.result(timeout=30)
        assert "child run" in str(info.value)
        events = run.events()
        assert events[-1]["type"] == "workflow.failed"
        assert len(events) == LIMIT + 1  # the limit, and the final event past it
        assert run.status() == "failed"

    def test_a_workflow_that_loops_forever_fails_at_the_limit(self, durable_worker):
        self.assert_failed_at_the_limit(celery_durable.start(forever))

    def test_catching_the_error_does_not_save_the_run(self, durable_worker):
        self.assert_failed_at_the_limit(celery_durable.start(stubborn))

    def test_a_run_suspended_at_the_limit_fails_when_it_resumes(self, durable_worker):
        # Each sleep suspends (2 events) and resumes (1): the 19th event is a
        # suspension, and the claim of the next execution would be the 20th.
        run = celery_durable.start(napper)
        self.assert_failed_at_the_limit(run)
        assert run.events()[-2]["type"] == "workflow.suspended"


def test_the_limit_is_refused_in_the_journal_itself(redis_client):
    from celery_durable.journal import Journal
    from celery_durable.keys import Keys

    journal = Journal(redis_client, Keys("jt"), max_events=10)
    journal.append("r", 0, [("workflow.started", {})] + [("workflow.executing", {})] * 8)
    with pytest.raises(RunEventLimitError, match="limit of 10 events"):
        journal.append("r", 9, [("workflow.executing", {})] * 2)
    assert redis_client.xlen(journal.keys.run_events("r")) == 9  # nothing written
    journal.append("r", 9, [("workflow.executing", {})])
    journal.append("r", 10, [("workflow.failed", {"error": {}})])  # the final one passes
    assert journal.status("r") == "failed"


def test_the_default_limit_is_generous(durable_app):
    assert extension_for(durable_app).settings.max_run_events == 100_000


# -- paging a long history -----------------------------------------------------------------


HISTORY = 50_000


@pytest.fixture
def long_run(durable_app) -> str:
    """A run of 50,000 events, written straight into the journal."""
    journal = extension_for(durable_app).journal
    journal.create("long", "tests.limit.forever", {"name": "tests.limit.forever", "args": []})
    position = 1
    while position < HISTORY - 1:
        batch = min(2_000, HISTORY - 1 - position)
        journal.append(
            "long",
            position,
            [("step.completed", {"position": position + i, "name": "tick"}) for i in range(batch)],
        )
        position += batch
    journal.append("long", position, [("workflow.completed", {"result": 7})])
    return "long"


def test_describe_run_reads_one_page_at_a_time(durable_app, long_run):
    first = describe_run(long_run, limit=1000)
    assert first["events"] == HISTORY
    assert [t["seq"] for t in first["timeline"]] == list(range(1, 1001))
    assert first["result"] == 7 and first["args"] == []
    seen, cursor, pages = 1000, first["next_cursor"], 1
    while cursor:
        page = describe_run(long_run, limit=1000, cursor=cursor)
        assert page["timeline"][0]["seq"] == seen + 1
        seen += len(page["timeline"])
        cursor, pages = page["next_cursor"], pages + 1
    assert (seen, pages) == (HISTORY, 50)
    assert page["timeline"][-1]["type"] == "workflow.completed"


def test_runs_show_prints_a_page_and_the_cursor_to_go_on(long_run, cli):
    def show(*args: str) -> str:
        result = cli("runs", "show", long_run, *args)
        assert result.exit_code == 0, result.output
        return result.output

    output = show("--limit", "50")
    rows = [line for line in output.splitlines() if "step.completed" in line]
    assert len(rows) == 49 and len(output.splitlines()) < 80
    assert "events    50,000" in output and "events 1-50 of 50,000" in output
    cursor = output.strip().splitlines()[-1].removeprefix("more: --cursor ")
    second = json.loads(show("--limit", "50", "--cursor", cursor, "--json"))
    assert [t["seq"] for t in second["timeline"]] == list(range(51, 101))
    assert second["events"] == HISTORY and second["result"] == 7
    assert len(show().splitlines()) < 240  # the default page: 200 events


def test_a_bad_cursor_or_limit_is_a_clear_error(durable_app, long_run):
    with pytest.raises(ConfigurationError, match="invalid cursor 'x'"):
        describe_run(long_run, cursor="x")
    with pytest.raises(ConfigurationError, match="limit must be between 1 and 1000"):
        describe_run(long_run, limit=5000)
