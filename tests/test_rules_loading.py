"""Rules are checked when they load; a bad rule names itself and its field."""

from __future__ import annotations

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable import RulesError
from celery_durable.plugins import make_plugin_manager
from celery_durable.rules.loader import load_rules
from celery_durable.rules.registry import PartRegistry


def rule(**overrides):
    base = {
        "name": "Auto-retry network errors",
        "trigger": {
            "event": "task.failed",
            "conditions": {
                "task_name_pattern": "myapp.tasks.*",
                "queue": "email",
                "error_pattern": "ConnectionError|Timeout",
                "failure_count_threshold": 3,
            },
        },
        "actions": [
            {
                "type": "retry",
                "delay_seconds": 10,
                "max_attempts": 5,
                "exponential_backoff": True,
                "backoff_multiplier": 2,
                "max_delay_seconds": 300,
                "same_arguments": True,
            },
            {
                "type": "slack",
                "webhook_url": "https://hooks.example/x",
                "message": "Task {task_name} failed on {worker}: {error_message}",
            },
        ],
        "circuit_breaker": {"max_executions": 100, "time_window_hours": 1},
    }
    base.update(overrides)
    return base


def problems(specs, parts) -> str:
    with pytest.raises(RulesError) as info:
        load_rules(specs, parts)
    return str(info.value)


def test_the_design_example_loads(durable_rule_parts):
    (loaded,) = load_rules([rule()], durable_rule_parts)
    assert loaded.event == "task.failed"
    assert [c.name for c in loaded.conditions] == [
        "task_name_pattern",
        "queue",
        "error_pattern",
        "failure_count_threshold",
    ]
    assert [a.name for a in loaded.actions] == ["retry", "slack"]
    assert (loaded.breaker.max_executions, loaded.breaker.window_seconds) == (100, 3600)


def test_defaults_single_action_and_disabled(durable_rule_parts):
    (loaded,) = load_rules(
        [
            {
                "name": "r",
                "enabled": False,
                "trigger": {"event": "worker.offline"},
                "action": {"type": "webhook", "url": "http://127.0.0.1:9/x"},
            }
        ],
        durable_rule_parts,
    )
    assert loaded.enabled is False
    assert (loaded.breaker.max_executions, loaded.breaker.window_seconds) == (100, 3600)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"trigger": {"event": "task.exploded"}},
            "rule 'Auto-retry network errors' (#1): trigger.event: unknown trigger 'task.exploded'",
        ),
        (
            {"trigger": {"event": "task.failed", "conditions": {"colour": "red"}}},
            "trigger.conditions.colour: unknown condition",
        ),
        (
            {"trigger": {"event": "task.failed", "conditions": {"error_pattern": "(unclosed"}}},
            "trigger.conditions.error_pattern: invalid regular expression '(unclosed'",
        ),
        (
            {"trigger": {"event": "worker.offline", "conditions": {"queue": "email"}}},
            "trigger.conditions.queue: does not apply to worker.offline events",
        ),
        (
            {"trigger": {"event": "task.execution_time_exceeded"}},
            "trigger: missing parameter(s) 'threshold_seconds'",
        ),
        ({"actions": [{"type": "teleport"}]}, "actions[0].type: unknown action 'teleport'"),
        (
            {"actions": [{"type": "slack"}]},
            "actions[0] (slack): missing parameter(s) 'webhook_url'",
        ),
        (
            {"actions": [{"type": "retry", "delay": 5}]},
            "actions[0] (retry): unknown parameter(s) 'delay'",
        ),
        (
            {"actions": [{"type": "retry", "max_attempts": "five"}]},
            "actions[0] (retry).max_attempts: expected int, got 'five'",
        ),
        (
            {"actions": [{"type": "retry", "args": [1]}]},
            "actions[0] (retry): args and kwargs replace the task's own arguments: "
            "give them with same_arguments: false",
        ),
        (
            {"actions": [{"type": "retry", "same_arguments": False, "kwargs": {"a": {1, 2}}}]},
            "actions[0] (retry): kwargs.a: set values cannot be sent as task arguments",
        ),
        (
            {
                "actions": [
                    {
                        "type": "slack",
                        "webhook_url": "https://h/x",
                        "message": "{task_args.__class__}",
                    }
                ]
            },
            "actions[0].message: template field {task_args.__class__} is not allowed",
        ),
        (
            {
                "actions": [
                    {"type": "slack", "webhook_url": "https://h/x", "message": "{error_message[0]}"}
                ]
            },
            "actions[0].message: template field {error_message[0]} is not allowed",
        ),
        (
            {"actions": [{"type": "slack", "webhook_url": "https://h/x", "message": "{secret}"}]},
            "unknown template variable {secret}",
        ),
        (
            {"circuit_breaker": {"max_executions": 0}},
            "circuit_breaker.max_executions: expected an integer from 1 to 100000, got 0",
        ),
        ({"colour": "red"}, "unknown field(s) colour"),
        ({"action": {"type": "revoke"}}, "give either `action:` or `actions:`, not both"),
        ({"template": "no-such-template"}, "template: unknown template 'no-such-template'"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_rule_and_the_field(
    durable_rule_parts, overrides, expected
):
    assert expected in problems([rule(**overrides)], durable_rule_parts)


def test_every_problem_is_reported_at_once(durable_rule_parts):
    message = problems(
        [
            rule(name="a", trigger={"event": "nope"}),
            rule(name="b", actions=[{"type": "nope"}]),
            rule(name="a"),
        ],
        durable_rule_parts,
    )
    assert "has 2 problem(s)" in message
    assert "rule 'a' (#1)" in message and "rule 'b' (#2)" in message


def test_duplicate_names_are_refused(durable_rule_parts):
    assert "is also the name of rule #1" in problems([rule(), rule()], durable_rule_parts)


def test_rules_from_a_yaml_file(durable_rule_parts, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("""
- name: Auto-retry network errors
  trigger:
    event: task.failed
    conditions:
      task_name_pattern: "myapp.tasks.*"
      error_pattern: "ConnectionError|Timeout"
  actions:
    - type: retry
      delay_seconds: 10
      max_attempts: 5
""")
    (loaded,) = load_rules(str(path), durable_rule_parts)
    assert loaded.name == "Auto-retry network errors"
    path.write_text("- name: [unclosed")
    assert "is not valid YAML" in problems(str(path), durable_rule_parts)
    assert "cannot read it" in problems(str(tmp_path / "missing.yaml"), durable_rule_parts)


def test_templates_are_used_by_name_and_overridden_field_by_field(durable_rule_parts):
    (loaded,) = load_rules(
        [
            {
                "name": "retry email",
                "template": "auto-retry-network",
                "trigger": {"conditions": {"queue": "email"}},
                "actions": [{"max_attempts": 2}],
            }
        ],
        durable_rule_parts,
    )
    names = [c.name for c in loaded.conditions]
    assert names == ["error_pattern", "queue"]  # the template's, plus ours
    (retry,) = loaded.actions
    assert (retry.max_attempts, retry.delay_seconds, retry.exponential_backoff) == (2, 10, True)


def test_a_template_needs_what_only_the_user_knows(durable_rule_parts):
    message = problems([{"name": "alert", "template": "critical-task-alert"}], durable_rule_parts)
    assert "actions[0] (slack): missing parameter(s) 'webhook_url'" in message
    (loaded,) = load_rules(
        [
            {
                "name": "alert",
                "template": "critical-task-alert",
                "actions": [{"webhook_url": "https://hooks.example/a"}],
            }
        ],
        durable_rule_parts,
    )
    assert loaded.actions[0].webhook_url == "https://hooks.example/a"


def test_every_template_loads_once_completed(durable_rule_parts):
    from celery_durable.rules.templates import TEMPLATES

    completions = {
        "critical-task-alert": {"actions": [{"webhook_url": "https://h/x"}]},
        "escalate-repeated-failures": {"actions": [{"url": "https://h/x"}]},
    }
    specs = [{"name": name, "template": name, **completions.get(name, {})} for name in TEMPLATES]
    assert len(load_rules(specs, durable_rule_parts)) == len(TEMPLATES)


def test_a_worker_refuses_to_start_with_bad_rules(durable_redis_url):
    app = Celery("bad-rules", broker=durable_redis_url, set_as_current=False)
    app.conf.update(
        durable_redis_url=durable_redis_url,
        durable_rules=[rule(trigger={"event": "task.exploded"})],
    )
    celery_durable.install(app)
    with (
        pytest.raises(RulesError, match=r"trigger\.event: unknown trigger 'task\.exploded'"),
        start_worker(app, pool="solo", perform_ping_check=False),
    ):
        pass


def test_an_installed_plugin_is_used_from_a_yaml_rule(tmp_path):
    """celery-durable-pagerduty (plugins/) is installed: its entry point is found."""
    path = tmp_path / "rules.yaml"
    path.write_text("""
- name: Page on payment failures
  trigger:
    event: task.failed
    conditions: {task_name_pattern: "shop.payments.*"}
  action:
    type: pagerduty
    routing_key: R0UT1NGK3Y
    severity: critical
""")
    parts = PartRegistry.collect(make_plugin_manager())
    (loaded,) = load_rules(str(path), parts)
    assert type(loaded.actions[0]).__module__ == "celery_durable_pagerduty"
    path.write_text(path.read_text().replace("critical", "apocalyptic"))
    assert "action (pagerduty): severity must be one of" in problems(str(path), parts)


def test_a_plugin_named_in_durable_plugins_is_registered_once():
    pm = make_plugin_manager(["tests.plugin_for_tests", "celery_durable_pagerduty"])
    parts = PartRegistry.collect(pm)
    assert "weekday" in parts.conditions and "remember" in parts.actions
    (loaded,) = load_rules(
        [
            {
                "name": "weekend failures",
                "trigger": {"event": "task.failed", "conditions": {"weekday": ["sat", "sun"]}},
                "action": {"type": "remember", "key": "k", "note": "{task_name} on a weekend"},
            }
        ],
        parts,
    )
    assert loaded.conditions[0].value == ["sat", "sun"]
    message = problems(
        [
            {
                "name": "bad",
                "trigger": {"event": "task.failed", "conditions": {"weekday": "sat"}},
                "action": {"type": "remember", "key": "k"},
            }
        ],
        parts,
    )
    assert "trigger.conditions.weekday: expected a list of day names" in message


def test_an_unimportable_plugin_module_is_a_clear_error():
    with pytest.raises(
        celery_durable.errors.ConfigurationError,
        match="durable_plugins: cannot import plugin module 'no_such_mod'",
    ):
        make_plugin_manager(["no_such_mod"])


def test_environment_variables_fill_a_rule_file(durable_rule_parts, tmp_path, monkeypatch):
    path = tmp_path / "rules.yaml"
    path.write_text("""
- name: alert
  trigger: {event: workflow.failed}
  action: {type: slack, webhook_url: "${SLACK_URL}", message: "{workflow_name} failed"}
""")
    monkeypatch.setenv("SLACK_URL", "https://hooks.example/T0/B0/secret")
    (loaded,) = load_rules(str(path), durable_rule_parts)
    assert loaded.actions[0].webhook_url == "https://hooks.example/T0/B0/secret"
    monkeypatch.delenv("SLACK_URL")
    assert "environment variable(s) SLACK_URL not set" in problems(str(path), durable_rule_parts)


def test_error_pattern_sees_the_exception_base_classes():
    from celery_durable.activity import Activity
    from celery_durable.default_plugins.conditions import ErrorPattern
    from celery_durable.worker.task_events import _bases

    class MailRelayDown(ConnectionError):
        pass

    bases = _bases(MailRelayDown("closed"))
    assert bases[:2] == ["ConnectionError", "OSError"]
    event = Activity(
        "task.failed",
        {"error_type": "MailRelayDown", "error_bases": bases, "error_message": "closed"},
    )
    assert ErrorPattern("^MailRelayDown ConnectionError").matches(event, None)
    assert ErrorPattern(r"\bConnectionError\b").matches(event, None)
    assert not ErrorPattern("TimeoutError").matches(event, None)


def slack(**params):
    return {"type": "slack", "webhook_url": "https://hooks.example/x", **params}


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (slack(message="{task_name:d}"), "actions[0].message: template field {task_name:d}"),
        (
            slack(message="{task_name:>300000000}"),
            "actions[0].message: template field {task_name:>300000000}: format specs",
        ),
        (slack(message="{task_name!r}"), "actions[0].message: template field {task_name!r}"),
        (slack(timeout=-5), "actions[0] (slack).timeout: expected a number > 0 and <= 60"),
        (slack(timeout=float("nan")), "actions[0] (slack).timeout: expected a number > 0"),
        (
            {"type": "webhook", "url": "https://h/x", "timeout": -5},
            "actions[0] (webhook).timeout: expected a number > 0 and <= 60, got -5",
        ),
        (
            {"type": "webhook", "url": "https://h/x", "retries": 100000000},
            "actions[0] (webhook).retries: expected a number >= 0 and <= 10, got 100000000",
        ),
        (
            {"type": "revoke", "signal": "SIGFOO"},
            "actions[0] (revoke): signal: 'SIGFOO' is not a signal of this system",
        ),
        (
            {"type": "retry", "max_attempts": 100000000},
            "actions[0] (retry).max_attempts: expected a number >= 1 and <= 100",
        ),
        (
            {"type": "retry", "delay_seconds": float("nan")},
            "actions[0] (retry).delay_seconds: expected a number >= 0 and <= 3600, got nan",
        ),
        (
            {"type": "retry", "backoff_multiplier": 1e308},
            "actions[0] (retry).backoff_multiplier: expected a number >= 1 and <= 10",
        ),
        (
            {"type": "retry", "max_delay_seconds": float("inf")},
            "actions[0] (retry).max_delay_seconds: expected a number >= 0 and <= 3600, got inf",
        ),
    ],
)
def test_format_specs_signals_and_numbers_out_of_bounds_are_refused(
    durable_rule_parts, action, expected
):
    assert expected in problems([rule(actions=[action])], durable_rule_parts)


def test_a_real_signal_name_is_accepted(durable_rule_parts):
    (loaded,) = load_rules(
        [rule(actions=[{"type": "revoke", "signal": "SIGKILL"}])], durable_rule_parts
    )
    assert loaded.actions[0].signal == "SIGKILL"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"trigger": {"event": "task.execution_time_exceeded", "threshold_seconds": 0}},
            "trigger.threshold_seconds: expected a number > 0 and <= 604800, got 0",
        ),
        (
            {
                "trigger": {
                    "event": "task.execution_time_exceeded",
                    "threshold_seconds": float("inf"),
                }
            },
            "trigger.threshold_seconds: expected a number > 0 and <= 604800, got inf",
        ),
        (
            {"circuit_breaker": {"time_window_hours": float("inf")}},
            "circuit_breaker.time_window_hours: expected a number > 0 and <= 168, got inf",
        ),
        (
            {"circuit_breaker": {"max_executions": 10**12}},
            "circuit_breaker.max_executions: expected an integer from 1 to 100000",
        ),
        (
            {"trigger": {"event": "task.failed", "conditions": {"failure_count_threshold": 10**9}}},
            "trigger.conditions.failure_count_threshold: expected an integer from 1 to 10000",
        ),
    ],
)
def test_trigger_condition_and_breaker_numbers_are_bounded(durable_rule_parts, overrides, expected):
    assert expected in problems([rule(**overrides)], durable_rule_parts)


def test_every_problem_of_one_rule_is_listed_with_its_field(durable_rule_parts):
    message = problems(
        [
            rule(
                enabled="yes",
                trigger={
                    "event": "task.failed",
                    "conditions": {"colour": "red", "error_pattern": "(unclosed"},
                },
                actions=[
                    {"type": "webhook", "url": "https://h/x", "timeout": -5, "retries": 10**8},
                    slack(message="{task_name:d}"),
                    {"type": "revoke", "signal": "SIGFOO"},
                ],
                circuit_breaker={"max_executions": 0, "time_window_hours": -1},
            )
        ],
        durable_rule_parts,
    )
    label = "rule 'Auto-retry network errors' (#1): "
    for field in [
        "enabled:",
        "trigger.conditions.colour:",
        "trigger.conditions.error_pattern:",
        "actions[0] (webhook).timeout:",
        "actions[0] (webhook).retries:",
        "actions[1].message:",
        "actions[2] (revoke): signal:",
        "circuit_breaker.max_executions:",
        "circuit_breaker.time_window_hours:",
    ]:
        assert f"{label}{field}" in message, field
    assert "has 9 problem(s)" in message


# Seven levels of ten aliases each: 10**7 values once expanded, a few lines written.
LAUGHS = "\n".join(
    ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]
    + ["rules:", "  - {name: laughs, description: *l6}"]
)
DEEP = "- {name: deep, description: " + "[" * 40 + "]" * 40 + "}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &a [*a]", "a[0]: contains itself (a recursive YAML alias such as `a: &a [*a]`)"),
        ("- &r {name: x, trigger: *r}", "[0].trigger: contains itself"),
        (
            LAUGHS,
            "holds more than 100000 values once YAML aliases are expanded",
        ),
        (DEEP, "[0].description" + "[0]" * 30 + ": nests deeper than 32 levels"),
        ("[" * 5000 + "]" * 5000, "nests too deeply to read"),
    ],
)
def test_recursive_and_exploding_yaml_is_a_clear_rules_error(
    durable_rule_parts, tmp_path, text, expected
):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    assert expected in problems(str(path), durable_rule_parts)


def test_a_recursive_structure_given_as_a_list_is_refused(durable_rule_parts):
    spec = rule()
    spec["trigger"]["conditions"]["loop"] = spec
    assert "contains itself" in problems([spec], durable_rule_parts)
