"""Stored rules created, checked, edited and deleted in YAML through the web API.

Over issue 13's `save_rules`/`validate_rules`/`delete_rule`; the server is the
real uvicorn in a thread, the rules are stored in the test's own Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from celery_durable.web.rule_editing import field_line
from celery_durable.web.server import serve_in_thread

TOKEN = "rules-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

BAD = """\
name: Retry mail
trigger:
  event: task.failedd
  conditions:
    task_name_pattern: "mail.*"
    error_pattern: "("
actions:
  - type: retry
    delay_seconds: soon
"""
GOOD = BAD.replace("task.failedd", "task.failed").replace('"("', '"ConnectionError"')
GOOD = GOOD.replace("soon", "10")


@pytest.fixture
def durable_app_config() -> dict[str, Any]:
    return {
        "durable_web_token": TOKEN,
        "durable_rules": [
            {
                "name": "from config",
                "trigger": {"event": "worker.offline"},
                "action": {"type": "revoke"},
            }
        ],
    }


@pytest.fixture
def web(durable_app) -> Iterator[httpx.Client]:
    with (
        serve_in_thread(durable_app) as url,
        httpx.Client(base_url=url, timeout=15) as client,
    ):
        yield client


def names(web: httpx.Client) -> dict[str, str]:
    return {r["name"]: r["source"] for r in web.get("/api/rules").json()}


def test_a_rule_with_mistakes_is_refused_with_each_field_and_line(web):
    checked = web.post("/api/rules/validate", json={"yaml": BAD})
    assert checked.status_code == 200
    problems = {(p["field"], p["line"]) for p in checked.json()["problems"]}
    assert problems == {
        ("trigger.event", 3),
        ("trigger.conditions.error_pattern", 6),
        ("actions[0] (retry).delay_seconds", 9),
    }
    assert web.post("/api/rules", json={"yaml": BAD}).status_code == 401
    refused = web.post("/api/rules", json={"yaml": BAD}, headers=AUTH)
    assert refused.status_code == 400
    assert "unknown trigger 'task.failedd'" in refused.json()["error"]
    assert len(refused.json()["problems"]) == 3
    assert "Retry mail" not in names(web)  # nothing stored

    not_yaml = web.post("/api/rules", json={"yaml": "name: [x\n"}, headers=AUTH)
    assert not_yaml.status_code == 400
    assert not_yaml.json()["problems"][0]["message"].startswith("not valid YAML")
    assert not_yaml.json()["problems"][0]["line"] == 2
    no_text = web.post("/api/rules", json={"rule": 1}, headers=AUTH)
    assert no_text.status_code == 400 and '{"yaml"' in no_text.json()["error"]


def test_create_edit_and_delete_a_stored_rule(web):
    assert web.post("/api/rules/validate", json={"yaml": GOOD}).json() == {"problems": []}
    saved = web.post("/api/rules", json={"yaml": GOOD}, headers=AUTH)
    assert saved.status_code == 200, saved.text
    assert [(r["name"], r["change"]) for r in saved.json()["saved"]] == [("Retry mail", "added")]
    assert names(web) == {"from config": "config", "Retry mail": "stored"}

    text = web.get("/api/rules/Retry mail/yaml").json()["yaml"]
    assert "delay_seconds: 10" in text
    edited = web.post(
        "/api/rules",
        json={"yaml": text.replace("delay_seconds: 10", "delay_seconds: 30")},
        headers=AUTH,
    )
    assert edited.json()["saved"][0]["change"] == "changed"
    assert "delay_seconds: 30" in web.get("/api/rules/Retry mail/yaml").json()["yaml"]

    config = web.delete("/api/rules/from config", headers=AUTH)
    assert config.status_code == 400 and "durable_rules" in config.json()["error"]
    assert web.delete("/api/rules/Retry mail").status_code == 401
    assert web.delete("/api/rules/Retry mail", headers=AUTH).json()["deleted"] is True
    assert names(web) == {"from config": "config"}
    assert web.get("/api/rules/Retry mail/yaml").status_code == 404


def test_field_line_finds_the_key_under_the_rule():
    text = "- name: a\n  trigger:\n    event: x\n- name: b\n  trigger:\n    event: y\n"
    assert field_line(text, "trigger.event", "b") == 6
    assert field_line(text, "trigger.event", "a") == 3
    assert field_line(text, None, "b") == 4
    assert field_line(text, "action (retry).delay_seconds", "a") is None


def test_a_rule_is_tried_before_it_is_saved(web):
    event = {
        "type": "task.failed",
        "data": {
            "task_name": "mail.send",
            "task_id": "t-1",
            "error_type": "ConnectionError",
            "error_message": "refused",
        },
    }
    report = web.post("/api/rules/try", json={"yaml": GOOD, "event": event})
    assert report.status_code == 200, report.text
    assert report.json()["would_fire"] is True and report.json()["rule"] == "Retry mail"
    other = {**event, "data": {**event["data"], "task_name": "billing.charge"}}
    assert (
        web.post("/api/rules/try", json={"yaml": GOOD, "event": other}).json()["would_fire"]
        is False
    )
    bad = web.post("/api/rules/try", json={"yaml": BAD, "event": event})
    assert bad.status_code == 400
    assert {p["line"] for p in bad.json()["problems"]} == {3, 6, 9}
    two = "- name: a\n  trigger: {event: task.failed}\n  action: {type: revoke}\n"
    listed = web.post("/api/rules/try", json={"yaml": two, "event": event})
    assert listed.status_code == 400 and "one rule at a time" in listed.json()["error"]
    assert "Retry mail" not in names(web)  # tried, not stored
