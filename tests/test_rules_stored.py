"""Rules stored in Redis at run time: save, refuse, replace, delete, export, record."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import celery_durable
from celery_durable import RuleProblem, RulesError
from celery_durable.errors import ConfigurationError
from celery_durable.extension import extension_for
from celery_durable.plugins import make_plugin_manager
from celery_durable.rules.loader import load_rules
from celery_durable.rules.registry import PartRegistry
from celery_durable.rules.store import RuleStore

CONFIG_RULE = {
    "name": "from config",
    "trigger": {"event": "task.failed"},
    "action": {"type": "webhook", "url": "http://127.0.0.1:9/config"},
}


def stored_rule(name: str = "alert on billing", **overrides: Any) -> dict[str, Any]:
    rule = {
        "name": name,
        "trigger": {
            "event": "task.failed",
            "conditions": {"task_name_pattern": "billing.*", "error_pattern": "Timeout"},
        },
        "action": {"type": "webhook", "url": "http://127.0.0.1:9/hook"},
    }
    rule.update(overrides)
    return rule


@pytest.fixture
def durable_app_config() -> dict[str, Any]:
    return {"durable_rules": [CONFIG_RULE]}


def by_name(app) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in celery_durable.list_rules(app=app)}


def redacted(rule: dict[str, Any]) -> dict[str, Any]:
    from celery_durable.redaction import redact

    return {**rule, "action": {**rule["action"], "url": redact(rule["action"]["url"])}}


def everything_of(app) -> list[dict[str, Any]]:
    return celery_durable.rule_changes(app=app, limit=1000)


def test_saved_rules_are_listed_with_their_source_and_export_loads_again(durable_app):
    saved = celery_durable.save_rules([stored_rule(), stored_rule("second")], app=durable_app)
    assert [(s["name"], s["change"]) for s in saved] == [
        ("alert on billing", "added"),
        ("second", "added"),
    ]
    listed = by_name(durable_app)
    assert listed["from config"]["source"] == "config"
    assert listed["alert on billing"]["source"] == "stored"
    assert listed["alert on billing"]["event"] == "task.failed"
    assert listed["alert on billing"]["conditions"] == ["task_name_pattern", "error_pattern"]
    assert listed["alert on billing"]["problems"] == []

    exported = yaml.safe_load(celery_durable.export_rules(app=durable_app))
    assert [r["name"] for r in exported] == ["from config", "alert on billing", "second"]
    assert exported[1] == stored_rule()
    registry = PartRegistry.collect(make_plugin_manager())
    assert [r.name for r in load_rules(exported, registry)] == [
        "from config",
        "alert on billing",
        "second",
    ]


def test_a_refused_save_lists_every_problem_and_stores_nothing(durable_app):
    celery_durable.save_rules([stored_rule()], app=durable_app)
    version = RuleStore(extension_for(durable_app).redis, extension_for(durable_app).keys).version()
    bad = [
        stored_rule(),  # fine, but the batch is refused whole
        stored_rule(
            "bad regex",
            trigger={"event": "task.failed", "conditions": {"error_pattern": "(unclosed"}},
        ),
        stored_rule("bad action", action={"type": "webhook", "url": 5}),
        {"trigger": {"event": "task.nope"}, "action": {"type": "teleport"}},
        stored_rule("from config"),
    ]
    with pytest.raises(RulesError) as info:
        celery_durable.save_rules(bad, app=durable_app)
    details = info.value.details
    assert all(isinstance(p, RuleProblem) for p in details)
    found = {(p.rule, p.index, p.field) for p in details}
    assert ("bad regex", 2, "trigger.conditions.error_pattern") in found
    assert ("bad action", 3, "action (webhook).url") in found
    assert (None, 4, "trigger.event") in found
    assert (None, 4, "name") in found
    assert (None, 4, "action.type") in found
    assert ("from config", 5, "name") in found
    assert all(p.source == "save_rules" for p in details)
    assert "rule 'bad regex' (#2): trigger.conditions.error_pattern:" in str(info.value)
    assert info.value.problems == [str(p) for p in details]
    # Nothing changed: same version, same rules.
    store = RuleStore(extension_for(durable_app).redis, extension_for(durable_app).keys)
    assert store.version() == version
    assert set(by_name(durable_app)) == {"from config", "alert on billing"}
    assert celery_durable.validate_rules(bad, app=durable_app) == details
    assert celery_durable.validate_rules([stored_rule("ok")], app=durable_app) == []


def test_config_rule_problems_carry_rule_and_field():
    registry = PartRegistry.collect(make_plugin_manager())
    with pytest.raises(RulesError) as info:
        load_rules([stored_rule(circuit_breaker={"max_executions": 0})], registry)
    (problem,) = info.value.details
    assert (problem.rule, problem.index, problem.field) == (
        "alert on billing",
        1,
        "circuit_breaker.max_executions",
    )
    assert problem.message.startswith("expected an integer from 1 to")
    assert problem.source == "durable_rules"


def test_values_json_cannot_keep_are_refused(durable_app):
    import datetime as dt

    with pytest.raises(RulesError) as info:
        celery_durable.save_rules([stored_rule(description=dt.date(2026, 1, 1))], app=durable_app)
    assert "cannot be stored as JSON" in info.value.details[0].message


def test_replace_delete_and_the_record_of_changes(durable_app):
    celery_durable.save_rules([stored_rule()], app=durable_app)
    again = celery_durable.save_rules([stored_rule()], app=durable_app)
    assert again[0]["change"] == "unchanged"
    edited = stored_rule(action={"type": "webhook", "url": "http://127.0.0.1:9/other"})
    assert celery_durable.save_rules(edited, app=durable_app)[0]["change"] == "changed"
    celery_durable.set_rule_enabled("alert on billing", False, app=durable_app)
    assert by_name(durable_app)["alert on billing"]["enabled"] is False
    celery_durable.set_rule_enabled("from config", False, app=durable_app)

    with pytest.raises(ConfigurationError, match="comes from durable_rules"):
        celery_durable.delete_rule("from config", app=durable_app)
    with pytest.raises(ConfigurationError, match="no stored rule named 'nope'"):
        celery_durable.delete_rule("nope", app=durable_app)
    celery_durable.delete_rule("alert on billing", app=durable_app)
    assert set(by_name(durable_app)) == {"from config"}

    changes = celery_durable.rule_changes("alert on billing", app=durable_app)
    assert [c["action"] for c in changes] == ["delete", "disable", "change", "add"]
    delete, disable, change, add = changes
    # The record keeps the rules with their secret fields redacted (a webhook's URL).
    shown, shown_edited = redacted(stored_rule()), redacted(edited)
    assert shown["action"]["url"].startswith("http://127.0.0.1:9/…#")
    assert shown["action"]["url"] != shown_edited["action"]["url"]
    assert add["before"] is None and add["after"] == shown
    assert change["before"] == shown and change["after"] == shown_edited
    assert disable["before"] is None and disable["after"] == "off"
    assert delete["before"] == shown_edited and delete["after"] is None
    assert "/hook" not in str(everything_of(durable_app)) and "/other" not in str(changes)
    assert add["version"] < change["version"] < delete["version"]
    for entry in changes:
        assert entry["host"] and entry["user"] and entry["ts"] > 0
    everything = celery_durable.rule_changes(app=durable_app)
    assert len(everything) == 5 and everything[1]["rule"] == "from config"
    page = celery_durable.rule_changes(limit=2, app=durable_app)
    rest = celery_durable.rule_changes(limit=10, before=page[-1]["id"], app=durable_app)
    assert [c["id"] for c in page + rest] == [c["id"] for c in everything]


def test_a_stored_rule_this_process_cannot_load_is_listed_with_its_problem(durable_app):
    """Saved by a process that has a plugin this one lacks: listed, the others run."""
    ext = extension_for(durable_app)
    RuleStore(ext.redis, ext.keys).write(
        {
            "needs plugin": stored_rule("needs plugin", action={"type": "remember", "key": "k"}),
            "fine": stored_rule("fine"),
        }
    )
    listed = by_name(durable_app)
    assert listed["fine"]["problems"] == []
    broken = listed["needs plugin"]
    assert broken["source"] == "stored" and broken["enabled"] is False
    (problem,) = broken["problems"]
    assert problem["field"] == "action.type"
    assert "unknown action 'remember'" in problem["message"]
    # It can still be switched and deleted.
    celery_durable.set_rule_enabled("needs plugin", False, app=durable_app)
    celery_durable.delete_rule("needs plugin", app=durable_app)
    assert "needs plugin" not in by_name(durable_app)


def test_a_stored_value_that_is_not_a_rule_is_reported_not_fatal(durable_app):
    """Something else wrote the hash: that entry is a problem, the other rules load."""
    ext = extension_for(durable_app)
    store = RuleStore(ext.redis, ext.keys)
    store.write({"fine": stored_rule("fine")})
    ext.redis.hset(ext.keys.stored_rules(), "junk", b"\xff not json")
    ext.redis.incr(ext.keys.rules_version())
    listed = by_name(durable_app)
    assert listed["fine"]["problems"] == [] and listed["fine"]["source"] == "stored"
    (problem,) = listed["junk"]["problems"]
    assert "is not a rule as save_rules stores it" in problem["message"]
    celery_durable.delete_rule("junk", app=durable_app)
    assert set(by_name(durable_app)) == {"from config", "fine"}


def test_an_edit_keeps_the_breaker_and_history_a_rename_does_not(durable_app):
    from celery_durable.activity import Activity
    from celery_durable.rules.engine import rule_engine

    capped = stored_rule("capped", circuit_breaker={"max_executions": 1})
    celery_durable.save_rules([capped], app=durable_app)
    engine = rule_engine(extension_for(durable_app))
    failure = Activity("task.failed", {"task_name": "billing.charge", "error_type": "Timeout"})
    engine.on_emit(failure)  # "capped" fires once: its breaker's window is full
    full = {"executions": 1, "state": "open"}
    state = celery_durable.breaker_state("capped", app=durable_app)
    assert {k: state[k] for k in full} == full
    edited = {**capped, "action": {"type": "webhook", "url": "http://127.0.0.1:9/edited"}}
    celery_durable.save_rules([edited], app=durable_app)
    engine.on_emit(failure)  # refused by the breaker, which the edit kept
    state = celery_durable.breaker_state("capped", app=durable_app)
    assert {k: state[k] for k in full} == full
    assert [e["reason"] for e in celery_durable.rule_history("capped", app=durable_app)] == [
        "circuit breaker open"
    ]
    celery_durable.delete_rule("capped", app=durable_app)
    celery_durable.save_rules([{**edited, "name": "renamed"}], app=durable_app)
    state = celery_durable.breaker_state("renamed", app=durable_app)
    assert (state["executions"], state["state"]) == (0, "closed")


def test_export_keeps_environment_references_of_a_rules_file(
    durable_redis_url, tmp_path, monkeypatch
):
    from celery import Celery

    monkeypatch.setenv("HOOK_URL", "https://hooks.example/SECRET")
    path = tmp_path / "rules.yaml"
    path.write_text(
        "- name: from file\n"
        "  trigger: {event: task.failed}\n"
        "  action: {type: webhook, url: '${HOOK_URL}'}\n"
    )
    app = Celery("export-test", broker=durable_redis_url, set_as_current=False)
    app.conf.update(durable_redis_url=durable_redis_url, durable_rules=str(path))
    ext = celery_durable.install(app)
    try:
        exported = celery_durable.export_rules(app=app)
        assert "SECRET" not in exported
        assert yaml.safe_load(exported)[0]["action"]["url"] == "${HOOK_URL}"
    finally:
        ext.redis.close()
        app.close()


def test_dry_run_of_a_rule_not_saved_yet(durable_app):
    event = {
        "type": "task.failed",
        "data": {"task_name": "billing.charge", "error_type": "Timeout"},
    }
    report = celery_durable.dry_run(stored_rule("draft"), event, app=durable_app)
    assert report.rule == "draft" and report.would_fire is True
    assert report.actions[0]["type"] == "webhook"
    with pytest.raises(RulesError) as info:
        celery_durable.dry_run(stored_rule("from config"), event, app=durable_app)
    assert info.value.details[0].field == "name"
    assert "draft" not in by_name(durable_app)  # nothing stored
