"""The PagerDuty action: its payload, its checks at rule load, and a real worker using it.

The integration test needs nothing but the package installed: the
`durable_*` fixtures come from celery_durable's pytest plugin (a private
redis-server on a free port), and its local HTTP receiver stands in for PagerDuty.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from celery import Celery
from celery_durable import RulesError
from celery_durable.activity import Activity
from celery_durable.contrib.http_receiver import HttpReceiver, ReceivedRequest, Reply
from celery_durable.extension import extension_for
from celery_durable.install import install
from celery_durable.rules.context import RuleContext
from celery_durable.rules.engine import rule_engine
from celery_durable.rules.loader import load_rules

from celery_durable_pagerduty import PagerDuty

ROUTING_KEY = "0123456789abcdef0123456789abcdef"


# -- a local stand-in for https://events.pagerduty.com/v2/enqueue ----------------------


def events_api_answer(request: ReceivedRequest) -> Reply:
    """What the Events API v2 answers to an accepted event."""
    dedup_key = (request["json"] or {}).get("dedup_key")
    return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}


@pytest.fixture
def pagerduty(durable_http_receiver: HttpReceiver) -> HttpReceiver:
    durable_http_receiver.reply = events_api_answer
    return durable_http_receiver


# -- unit: the payload -------------------------------------------------------------------


@pytest.fixture
def context() -> Iterator[RuleContext]:
    """A real RuleContext on an app that is never started (no Redis is touched)."""
    app = Celery("pd-unit", set_as_current=False)
    ext = install(app)
    yield RuleContext(ext, "Page on failures", "exec-1")
    app.close()


def failed_event() -> Activity:
    return Activity(
        type="task.failed",
        ts=1_700_000_000.5,
        data={
            "task_id": "t-123",
            "task_name": "billing.charge",
            "worker": "celery@host-1",
            "queue": "payments",
            "args_repr": "(42,)",
            "kwargs_repr": "",
            "error_type": "ConnectionError",
            "error_message": "gateway unreachable",
            "traceback": "Traceback (most recent call last):\n...",
            "retry": {"attempt": 0, "root": "t-123"},
            "message": {"args": [42], "secret": "never sent"},
        },
    )


def test_the_payload_is_an_events_api_v2_trigger(context):
    action = PagerDuty(routing_key=ROUTING_KEY, severity="critical")
    body = action.payload(failed_event(), context)
    assert body == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "Page on failures:task.failed:t-123",
        "payload": {
            "summary": "billing.charge failed on celery@host-1: gateway unreachable",
            "source": "celery@host-1",
            "severity": "critical",
            "timestamp": "2023-11-14T22:13:20.500000+00:00",
            "component": "billing.charge",
            "group": "payments",
            "class": "task.failed",
            "custom_details": {
                "task_id": "t-123",
                "task_name": "billing.charge",
                "queue": "payments",
                "args_repr": "(42,)",
                "error_type": "ConnectionError",
                "error_message": "gateway unreachable",
                "traceback": "Traceback (most recent call last):\n...",
                "event": "task.failed",
                "rule": "Page on failures",
                "execution_id": "exec-1",
            },
        },
    }
    dt.datetime.fromisoformat(body["payload"]["timestamp"])  # ISO 8601
    assert "never sent" not in json.dumps(body)  # the task's message is not shipped


def test_a_workflow_event_names_the_workflow_and_its_run(context):
    event = Activity(
        type="workflow.failed",
        data={
            "run_id": "r-9",
            "workflow_name": "onboarding",
            "error": {"type": "builtins.KeyError", "message": "'email'", "traceback": "tb"},
        },
    )
    body = PagerDuty(routing_key=ROUTING_KEY, summary="{workflow_name}: {error_message}").payload(
        event, context
    )
    assert body["dedup_key"] == "Page on failures:workflow.failed:r-9"
    assert body["payload"]["summary"] == "onboarding: 'email'"
    assert body["payload"]["component"] == "onboarding"
    assert body["payload"]["source"] == "pd-unit"  # no worker in the event: the app
    assert body["payload"]["custom_details"]["error_type"] == "builtins.KeyError"


def test_run_posts_and_returns_status_and_dedup_key(context):
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"status": "success", "dedup_key": "from-pd"})

    context.http = httpx.Client(transport=httpx.MockTransport(answer))
    action = PagerDuty(routing_key=ROUTING_KEY, url="https://pd.example/v2/enqueue", timeout=3)
    assert action.run(failed_event(), context) == {"status": 202, "dedup_key": "from-pd"}
    (request,) = seen
    assert str(request.url) == "https://pd.example/v2/enqueue"
    assert request.extensions["timeout"]["read"] == 3.0
    assert json.loads(request.content) == action.payload(failed_event(), context)


def test_run_raises_on_an_error_answer(context):
    context.http = httpx.Client(
        transport=httpx.MockTransport(
            lambda request: httpx.Response(400, json={"status": "invalid event"})
        )
    )
    with pytest.raises(RuntimeError, match=r"PagerDuty answered 400: .*invalid event"):
        PagerDuty(routing_key=ROUTING_KEY).run(failed_event(), context)


def test_preview_renders_without_sending(context):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError("preview must not send anything")

    context.http = httpx.Client(transport=httpx.MockTransport(refuse))
    preview = PagerDuty(routing_key=ROUTING_KEY).preview(failed_event(), context)
    assert preview["type"] == "pagerduty"
    assert preview["url"] == "https://events.pagerduty.com/v2/enqueue"
    assert preview["payload"]["payload"]["summary"] == (
        "billing.charge failed on celery@host-1: gateway unreachable"
    )
    assert preview["payload"]["routing_key"] == "0123..."  # not shown in full


# -- checks at rule load ------------------------------------------------------------------


def rule(**action: Any) -> dict[str, Any]:
    return {
        "name": "Page me",
        "trigger": {"event": "task.failed"},
        "action": {"type": "pagerduty", "routing_key": ROUTING_KEY, **action},
    }


def test_the_entry_point_registers_the_action(durable_rule_parts):
    assert durable_rule_parts.actions["pagerduty"] is PagerDuty
    (loaded,) = load_rules([rule(severity="warning")], durable_rule_parts)
    (action,) = loaded.actions
    assert (action.severity, action.url) == ("warning", "https://events.pagerduty.com/v2/enqueue")


def test_a_bad_severity_is_refused_naming_the_rule_and_field(durable_rule_parts):
    with pytest.raises(RulesError) as info:
        load_rules([rule(severity="fatal")], durable_rule_parts)
    (problem,) = info.value.problems
    assert problem.startswith("rule 'Page me' (#1): action (pagerduty): ")
    assert "severity must be one of critical, error, warning, info, got 'fatal'" in problem


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ({"routing_key": None}, "action (pagerduty).routing_key: expected str, got None"),
        ({"routing_key": "  "}, "routing_key must be a PagerDuty integration key"),
        ({"url": "events.pagerduty.com"}, "url must be an http(s) URL"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"summary": "{task_name.__class__}"}, "action.summary: template field"),
        ({"summary": "{hostname}"}, "action.summary: unknown template variable {hostname}"),
        ({"service": "x"}, "unknown parameter(s) 'service'"),
    ],
)
def test_other_bad_parameters_are_refused(durable_rule_parts, action, expected):
    with pytest.raises(RulesError) as info:
        load_rules([rule(**action)], durable_rule_parts)
    (problem,) = info.value.problems
    assert problem.startswith("rule 'Page me' (#1): ")
    assert expected in problem


def test_a_missing_routing_key_is_refused(durable_rule_parts):
    spec = rule()
    del spec["action"]["routing_key"]
    with pytest.raises(RulesError, match="missing parameter\\(s\\) 'routing_key'"):
        load_rules([spec], durable_rule_parts)


# -- integration: a real worker fails a task, PagerDuty hears of it -----------------------


@pytest.fixture
def durable_app_config(pagerduty: HttpReceiver) -> dict[str, Any]:
    return {
        "durable_rules": [
            {
                "name": "Page on billing failures",
                "trigger": {
                    "event": "task.failed",
                    "conditions": {"task_name_pattern": "billing.*"},
                },
                "action": {
                    "type": "pagerduty",
                    "routing_key": ROUTING_KEY,
                    "severity": "critical",
                    "url": f"{pagerduty.url}/v2/enqueue",
                    "timeout": 5,
                },
            }
        ]
    }


@pytest.fixture
def charge(durable_app: Celery) -> Any:
    """Registered before the worker starts, so that the worker knows it."""

    @durable_app.task(name="billing.charge")
    def charge(amount: int) -> None:
        raise ConnectionError(f"gateway unreachable while charging {amount}")

    return charge


def test_a_failed_task_triggers_a_pagerduty_alert(pagerduty, charge, durable_worker, durable_app):
    result = charge.delay(42)
    (post,) = pagerduty.wait_for(1, timeout=15)
    body = post["json"]

    assert post["path"] == "/v2/enqueue"
    assert body["routing_key"] == ROUTING_KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == f"Page on billing failures:task.failed:{result.id}"
    payload = body["payload"]
    assert payload["severity"] == "critical"
    # The event's worker is the request's hostname: the node name in a real
    # worker, the machine's name in celery.contrib.testing's in-process one.
    worker = payload["source"]
    assert worker in (durable_worker.hostname, socket.gethostname())
    assert payload["summary"] == (
        f"billing.charge failed on {worker}: gateway unreachable while charging 42"
    )
    assert payload["component"] == "billing.charge"
    dt.datetime.fromisoformat(payload["timestamp"])
    details = payload["custom_details"]
    assert details["task_id"] == result.id
    assert details["error_type"] == "ConnectionError"
    assert "42" in details["args_repr"]
    assert "ConnectionError" in details["traceback"]

    # The rule's history records the action's result once the runner is done.
    history = rule_engine(extension_for(durable_app)).history
    deadline = time.monotonic() + 10
    while (entry := history.last("Page on billing failures")) is None:
        assert time.monotonic() < deadline, "no history entry for the rule"
        time.sleep(0.05)
    assert entry["outcome"] == "success"
    (outcome,) = entry["actions"]
    assert outcome == {
        "type": "pagerduty",
        "ok": True,
        "result": {"status": 202, "dedup_key": body["dedup_key"]},
    }
