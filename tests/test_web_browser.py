"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

The page is served by the real uvicorn server in a thread, over a real Redis,
with a real in-process worker running the runs. Screenshots go to pytest's
tmp dir, and to docs/ when DURABLE_WEB_SCREENSHOTS=docs (how the README's
pictures were made).

Without a Chromium the tests are skipped with the reason, except under CI
(CI=true), where a missing browser fails them: .ci/run installs it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import celery_durable
from celery_durable.contrib.pytest import wait_for_status
from celery_durable.web.server import serve_in_thread
from tests import web_workflows
from tests.steps import arithmetic

TOKEN = "browser-token-0123456789abcdef"
DOCS = Path(__file__).resolve().parent.parent / "docs"
TIMEOUT_MS = 10_000


def _chromium() -> str:
    path = os.environ.get("DURABLE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if os.path.exists(path):
        return path
    reason = (
        f"no Chromium at {path}: install Debian's package (apt-get install chromium) "
        "or set DURABLE_CHROMIUM"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI the browser tests must run")
    pytest.skip(reason)


@pytest.fixture
def durable_app_config() -> dict[str, Any]:
    return {
        "durable_web_token": TOKEN,
        "durable_rules": [
            {
                "name": "mail retries",
                "trigger": {
                    "event": "task.failed",
                    "conditions": {"task_name_pattern": "mail.*"},
                },
                "action": {"type": "retry", "delay_seconds": 5, "max_attempts": 3},
            },
        ],
    }


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def dashboard(durable_app, durable_worker, browser) -> Iterator[tuple[Any, str]]:
    with serve_in_thread(durable_app) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            yield page, url
        finally:
            page.close()


def shot(page: Any, name: str, tmp_path: Path) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("DURABLE_WEB_SCREENSHOTS") == "docs":
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / name), full_page=True)


def test_find_a_run_open_its_timeline_and_cancel_it(dashboard, tmp_path):
    from playwright.sync_api import expect

    page, url = dashboard
    done = celery_durable.start(arithmetic, 2, 3)
    done.result(timeout=15)
    failed = celery_durable.start(web_workflows.declined, 9)
    wait_for_status(failed, "failed")
    waiting = celery_durable.start(web_workflows.approve, 1)
    wait_for_status(waiting, "waiting")

    page.goto(f"{url}/#/runs")
    runs = page.get_by_role("table", name="Runs")
    expect(runs.get_by_role("link", name=waiting.id)).to_be_visible()
    expect(runs.get_by_role("row")).to_have_count(4)  # the header and three runs
    shot(page, "web-runs.png", tmp_path)

    page.get_by_label("Status").select_option("waiting")
    page.get_by_role("button", name="Filter").click()
    expect(runs.get_by_role("row")).to_have_count(2)
    runs.get_by_role("link", name=waiting.id).click()

    expect(page.get_by_role("heading", name=f"Run {waiting.id}")).to_be_visible()
    timeline = page.get_by_role("table", name="Timeline")
    expect(timeline).to_contain_text("event.waiting")
    expect(timeline).to_contain_text("approval")
    expect(page.locator("#run-summary")).to_contain_text("waiting")
    shot(page, "web-run.png", tmp_path)

    page.get_by_role("button", name="Cancel run").click()  # no token yet
    expect(page.locator("#notice")).to_contain_text("enter the API token")
    assert waiting.status() == "waiting"
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Use").click()
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#notice")).to_contain_text(f"Run {waiting.id} cancelled")
    expect(page.locator("#run-summary")).to_contain_text("cancelled")
    expect(page.locator("#run-actions")).to_be_hidden()
    assert waiting.status() == "cancelled"

    page.goto(f"{url}/#/runs/{failed.id}")
    expect(page.locator("#run-error")).to_contain_text("card declined for order 9")


def test_send_an_event_and_watch_the_run_finish(dashboard, tmp_path):
    from playwright.sync_api import expect

    page, url = dashboard
    run = celery_durable.start(web_workflows.approve, 5)
    wait_for_status(run, "waiting")
    page.goto(f"{url}/#/runs/{run.id}")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Use").click()

    page.get_by_label("Event name").fill("approval")
    page.get_by_label("Payload (JSON)").fill("{ok: true}")
    page.get_by_role("button", name="Send event").click()
    expect(page.locator("#event-error")).to_contain_text("not valid JSON")
    assert run.status() == "waiting"

    page.get_by_label("Payload (JSON)").fill('{"ok": true}')
    page.get_by_role("button", name="Send event").click()
    assert run.result(timeout=15) == {"order": 5, "approval": {"ok": True}}
    # The page was not reloaded: the poll shows the run's end.
    expect(page.locator("#run-result")).to_contain_text('"ok":true')
    expect(page.get_by_role("table", name="Timeline")).to_contain_text("workflow.completed")


def test_rules_switch_dry_run_and_workers(dashboard, tmp_path):
    from playwright.sync_api import expect

    page, url = dashboard
    page.goto(f"{url}/#/rules")
    rules = page.get_by_role("table", name="Rules")
    expect(rules).to_contain_text("mail retries")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Use").click()
    page.get_by_role("button", name="Disable mail retries").click()
    expect(page.locator("#notice")).to_contain_text("Rule mail retries disabled")
    expect(rules.get_by_role("row", name="mail retries")).to_contain_text("switched off")
    assert celery_durable.list_rules()[0]["enabled"] is False
    page.get_by_role("button", name="Enable mail retries").click()
    expect(rules.get_by_role("row", name="mail retries")).to_contain_text("switched on")
    shot(page, "web-rules.png", tmp_path)

    rules.get_by_role("link", name="mail retries").click()
    expect(page.get_by_role("heading", name="Rule mail retries")).to_be_visible()
    page.get_by_label("Sample event (JSON)").fill(
        '{"type": "task.failed", "data": {"task_name": "mail.send", "task_id": "t-1", '
        '"error_message": "ConnectionError: refused", "error_type": "ConnectionError"}}'
    )
    page.get_by_role("button", name="Test", exact=True).click()
    result = page.locator("#test-result")
    expect(result).to_contain_text("Would fire: yes")
    expect(result).to_contain_text("Rendered actions")
    page.get_by_label("Sample event (JSON)").fill(
        '{"type": "task.failed", "data": {"task_name": "billing.charge", "task_id": "t-2", '
        '"error_message": "boom", "error_type": "ValueError"}}'
    )
    page.get_by_role("button", name="Test", exact=True).click()
    expect(result).to_contain_text("Would fire: no")
    shot(page, "web-rule-test.png", tmp_path)

    page.get_by_role("link", name="Workers").click()
    workers = page.get_by_role("table", name="Workers")
    expect(workers).to_contain_text("alive")


def test_readable_on_a_phone(durable_app, durable_worker, browser, tmp_path):
    from playwright.sync_api import expect

    run = celery_durable.start(web_workflows.approve, 8)
    wait_for_status(run, "waiting")
    with serve_in_thread(durable_app) as url:
        page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{url}/#/runs/{run.id}")
        expect(page.get_by_role("table", name="Timeline")).to_contain_text("event.waiting")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide on a 390px screen"
        shot(page, "web-run-phone.png", tmp_path)
        page.close()


def test_create_a_rule_with_a_mistake_see_the_error_fix_it(dashboard, tmp_path):
    from playwright.sync_api import expect

    page, url = dashboard
    page.goto(f"{url}/#/rules")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Use").click()
    page.get_by_role("link", name="New rule").click()
    editor = page.get_by_label("The rule, in YAML (one rule, or a list)")
    editor.fill(
        "name: Page on orphans\n"
        "trigger:\n"
        "  event: task.orphand\n"
        "actions:\n"
        "  - type: webhook\n"
        "    url: http://127.0.0.1:9/page\n"
        "    timeout: soon\n"
    )
    page.get_by_role("button", name="Save").click()
    problems = page.locator("#rule-problems")
    expect(problems).to_contain_text("trigger.event: unknown trigger 'task.orphand'")
    expect(problems).to_contain_text("line 3")
    expect(problems).to_contain_text("line 7")
    expect(editor).to_have_attribute("aria-invalid", "true")
    shot(page, "web-rule-editor.png", tmp_path)
    assert "Page on orphans" not in [r["name"] for r in celery_durable.list_rules()]

    problems.get_by_role("button", name="line 3").click()  # the caret goes to the line
    editor.fill(
        editor.input_value()
        .replace("task.orphand", "task.orphaned")
        .replace("    timeout: soon\n", "    timeout: 5\n")
    )
    page.get_by_role("button", name="Check").click()
    expect(problems).to_contain_text("No problems.")
    page.get_by_label("Sample event (JSON)").fill(
        '{"type": "task.orphaned", "data": {"task_name": "mail.send", "task_id": "t-1", '
        '"worker": "w1"}}'
    )
    page.get_by_role("button", name="Test before saving").click()
    expect(page.locator("#draft-result")).to_contain_text("Would fire: yes")
    expect(page.locator("#draft-result")).to_contain_text('"type": "webhook"')
    assert "Page on orphans" not in [r["name"] for r in celery_durable.list_rules()]
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#notice")).to_contain_text("Rule Page on orphans added.")
    expect(page.get_by_role("heading", name="Rule Page on orphans")).to_be_visible()

    page.get_by_role("link", name="Rules", exact=True).click()
    row = page.get_by_role("table", name="Rules").get_by_role("row", name="Page on orphans")
    expect(row).to_contain_text("stored")
    expect(row).to_contain_text("task.orphaned")

    row.get_by_role("link", name="Page on orphans").click()
    page.get_by_role("link", name="Edit").click()
    expect(editor).to_have_value(re.compile(r"timeout: 5"))
    editor.fill(editor.input_value().replace("timeout: 5", "timeout: 9"))
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#notice")).to_contain_text("Rule Page on orphans changed.")
    stored = [r for r in celery_durable.list_rules() if r["name"] == "Page on orphans"]
    assert stored and stored[0]["source"] == "stored"

    page.get_by_role("button", name="Delete rule").click()
    expect(page.locator("#notice")).to_contain_text("Rule Page on orphans deleted.")
    expect(page.get_by_role("table", name="Rules")).not_to_contain_text("Page on orphans")
    assert "Page on orphans" not in [r["name"] for r in celery_durable.list_rules()]


def test_usable_with_the_keyboard(dashboard):
    from playwright.sync_api import expect

    page, url = dashboard
    run = celery_durable.start(web_workflows.approve, 4)
    wait_for_status(run, "waiting")
    page.goto(f"{url}/#/runs")
    link = page.get_by_role("table", name="Runs").get_by_role("link", name=run.id)
    expect(link).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Run {run.id}")).to_be_visible()
    page.get_by_label("API token").focus()
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")  # the token form submits with Enter
    page.get_by_label("Event name").focus()
    page.keyboard.type("approval")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Payload (JSON)")).to_be_focused()
    page.keyboard.type('{"by": "keyboard"}')
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Send event")).to_be_focused()
    page.keyboard.press("Enter")
    assert run.result(timeout=15) == {"order": 4, "approval": {"by": "keyboard"}}
