"""`celery durable web`: the JSON API and webhook URLs over HTTP, against real workers.

The server is the real uvicorn in a thread on a free loopback port; runs are
executed by a real in-process Celery worker on the test's own redis-server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from celery.bin.celery import celery as celery_main
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner

import celery_durable
from celery_durable.errors import ConfigurationError, NotInWorkflowError
from celery_durable.web.server import check_bind, free_port, serve_in_thread
from tests import web_workflows
from tests.steps import arithmetic

TOKEN = "test-token-0123456789abcdef"
SECRET = "test-secret-0123456789abcdef"
PORT = free_port()


@pytest.fixture
def durable_app_config() -> dict[str, Any]:
    return {
        "durable_web_token": TOKEN,
        "durable_web_secret": SECRET,
        "durable_web_base_url": f"http://127.0.0.1:{PORT}/",
    }


@pytest.fixture
def web(durable_app, durable_worker) -> Iterator[httpx.Client]:
    with (
        serve_in_thread(durable_app, port=PORT) as url,
        httpx.Client(base_url=url, timeout=15) as client,
    ):
        yield client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_changes_need_the_bearer_token(web, durable_wait_for_status):
    run = celery_durable.start(web_workflows.approve, 1)
    durable_wait_for_status(run, "waiting")

    missing = web.post(f"/api/runs/{run.id}/cancel")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]
    wrong = web.post(f"/api/runs/{run.id}/cancel", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json() == {"error": "wrong token"}
    cross_site = web.post(
        f"/api/runs/{run.id}/cancel", headers={**AUTH, "Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403
    assert "cross-site" in cross_site.json()["error"]
    assert run.status() == "waiting"  # none of those changed anything

    done = web.post(f"/api/runs/{run.id}/cancel", headers=AUTH)
    assert done.status_code == 200 and done.json() == {"run": run.id, "cancelled": True}
    assert run.status() == "cancelled"
    again = web.post(f"/api/runs/{run.id}/cancel", headers=AUTH)
    assert again.json()["cancelled"] is False


def test_an_event_posted_to_the_api_resumes_the_run(web, durable_wait_for_status):
    run = celery_durable.start(web_workflows.approve, 7)
    durable_wait_for_status(run, "waiting")
    unauthorised = web.post(f"/api/runs/{run.id}/events/approval", json={"ok": True})
    assert unauthorised.status_code == 401
    sent = web.post(f"/api/runs/{run.id}/events/approval", json={"ok": True}, headers=AUTH)
    assert sent.status_code == 202, sent.text
    assert run.result(timeout=15) == {"order": 7, "approval": {"ok": True}}

    shown = web.get(f"/api/runs/{run.id}").json()
    assert shown["status"] == "completed" and shown["result"] == run.result(timeout=1)
    types = [item["type"] for item in shown["timeline"]]
    assert "event.received" in types and types[-1] == "workflow.completed"
    late = web.post(f"/api/runs/{run.id}/events/approval", json={}, headers=AUTH)
    assert late.status_code == 409, late.text
    assert "completed" in late.json()["error"]


def test_bad_input_gets_400_with_a_message(web, durable_wait_for_status):
    run = celery_durable.start(web_workflows.approve, 2)
    durable_wait_for_status(run, "waiting")
    cases = [
        (web.get("/api/runs?limit=abc"), 400, "limit: expected an integer"),
        (web.get("/api/runs?limit=5000"), 400, "limit: must be between 1 and 1000"),
        (web.get("/api/runs?cursor=nan"), 400, "invalid cursor"),
        (web.get("/api/runs/bad%20id"), 400, "run id: 'bad id' is not a valid id"),
        (web.get("/api/runs/nope"), 404, "no run with id 'nope'"),
        (web.get(f"/api/runs/{run.id}?cursor=zz"), 400, "invalid cursor"),
        (web.get("/api/rules/nope/history"), 404, "no rule named 'nope'"),
        (web.get("/api/rules/nope/history?cursor=x"), 400, "cursor:"),
        (web.get("/api/nothing"), 404, "no such endpoint"),
        (web.delete("/api/runs"), 405, "DELETE is not allowed"),
        (
            web.post(
                f"/api/runs/{run.id}/events/approval",
                content=b"{not json",
                headers={**AUTH, "Content-Type": "application/json"},
            ),
            400,
            "the body is not valid JSON",
        ),
        (web.post("/api/runs/nope/events/x", json=1, headers=AUTH), 404, "no run with id"),
        (web.post("/api/rules/nope/test", json={"task_id": "t"}, headers=AUTH), 404, "no rule"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert message in response.json()["error"], (response.request.url, response.text)
    assert run.status() == "waiting"  # the bad JSON delivered nothing


def test_listings_are_paged(web):
    runs = [celery_durable.start(arithmetic, n, 1) for n in range(3)]
    for run in runs:
        run.result(timeout=15)
    first = web.get("/api/runs?limit=2").json()
    assert [r["id"] for r in first["runs"]] == [runs[2].id, runs[1].id]
    rest = web.get("/api/runs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [r["id"] for r in rest["runs"]] == [runs[0].id] and rest["next_cursor"] is None
    only = web.get("/api/runs", params={"status": "completed", "workflow": "tests.arithmetic"})
    assert len(only.json()["runs"]) == 3
    assert web.get("/api/runs", params={"status": "failed"}).json()["runs"] == []
    timeline = web.get(f"/api/runs/{runs[0].id}?limit=2").json()
    assert len(timeline["timeline"]) == 2 and timeline["next_cursor"]


def test_webhook_url_delivers_once_and_resumes_the_waiting_run(
    web, durable_app, durable_wait_for_status, redis_client
):
    run = celery_durable.start(web_workflows.pay, 42)
    durable_wait_for_status(run, "waiting")
    url = redis_client.get(web_workflows.URL_KEY).decode()
    assert url.startswith(f"http://127.0.0.1:{PORT}/hooks/{run.id}/paid?")
    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    assert httpx.post(tampered, json={"amount": 1}).status_code == 403
    other_event = url.replace("/paid?", "/shipped?")
    assert httpx.post(other_event, json={}).status_code == 403
    assert run.status() == "waiting"

    delivered = httpx.post(url, json={"amount": 5})  # no token: the signature is enough
    assert delivered.status_code == 202, delivered.text
    assert delivered.json()["delivered"] is True
    waiting_for = durable_app.backend  # noqa: F841 - keeps the app alive in this scope
    _wait_for_event_received(run, "paid")

    replay = httpx.post(url, json={"amount": 5})
    assert replay.status_code == 200
    assert replay.json() == {"run": run.id, "event": "paid", "delivered": False, "repeat": True}

    shipped = web.post(f"/api/runs/{run.id}/events/shipped", json="box 1", headers=AUTH)
    assert shipped.status_code == 202
    assert run.result(timeout=15) == {"order": 42, "paid": {"amount": 5}, "shipped": "box 1"}
    received = [e for e in run.events() if e["type"] == "event.received"]
    assert [e["data"]["name"] for e in received] == ["paid", "shipped"]  # paid once
    finished = httpx.post(url, json={"amount": 5})
    assert finished.status_code == 410 and "completed" in finished.json()["error"]


def _wait_for_event_received(run, name: str, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not any(
        e["type"] == "event.received" and e["data"]["name"] == name for e in run.events()
    ):
        assert time.monotonic() < deadline, f"run {run.id} did not take event {name!r}"
        time.sleep(0.02)


def test_webhook_url_needs_its_settings_and_a_workflow():
    with pytest.raises(NotInWorkflowError, match="inside a running workflow"):
        celery_durable.webhook_url("paid")


def test_without_a_token_only_loopback(durable_app):
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", TOKEN)
    for host in ("0.0.0.0", "192.0.2.1", "example.com"):
        with pytest.raises(ConfigurationError, match="without durable_web_token"):
            check_bind(host, None)


def test_without_a_token_changes_come_only_from_loopback_names(durable_app, durable_worker):
    run = celery_durable.start(web_workflows.approve, 3)
    celery_durable.contrib.pytest.wait_for_status(run, "waiting")
    with serve_in_thread(durable_app, token="") as url, httpx.Client(base_url=url) as client:
        rebound = client.post(f"/api/runs/{run.id}/cancel", headers={"Host": "evil.example"})
        assert rebound.status_code == 403 and "loopback" in rebound.json()["error"]
        local = client.post(f"/api/runs/{run.id}/cancel")
        assert local.status_code == 200 and local.json()["cancelled"] is True


# -- the same JSON as the CLI's --json --------------------------------------------------


@pytest.fixture
def cli_app(durable_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DURABLE_CLI_TEST_REDIS_URL", durable_redis_url)
    from tests.apps import cli_app as module

    assert durable_redis_url == module.URL, "the CLI app was imported with another Redis"
    module.app.set_current()
    yield module.app


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(
        celery_main, ["-A", "tests.apps.cli_app", "durable", *args, "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_api_answers_what_the_cli_prints(cli_app):
    with start_worker(cli_app, pool="solo", perform_ping_check=False):
        run = celery_durable.start(arithmetic, 2, 3)
        run.result(timeout=15)
        with (
            serve_in_thread(cli_app, token=TOKEN) as url,
            httpx.Client(base_url=url, timeout=15) as web,
        ):
            assert web.get("/api/runs").json() == cli_json("runs", "list")
            assert web.get(f"/api/runs/{run.id}").json() == cli_json("runs", "show", run.id)
            assert web.get("/api/rules").json() == cli_json("rules", "list")
            api_workers, cli_workers = web.get("/api/workers").json(), cli_json("workers")
            assert [w["worker"] for w in api_workers] == [w["worker"] for w in cli_workers]
            assert api_workers[0].keys() == cli_workers[0].keys()
            history = web.get("/api/rules/flaky mail/history").json()
            assert history == cli_json("rules", "history", "flaky mail")


def test_web_command_refuses_a_public_address_without_a_token(cli_app):
    result = CliRunner().invoke(
        celery_main, ["-A", "tests.apps.cli_app", "durable", "web", "--host", "0.0.0.0"]
    )
    assert result.exit_code != 0
    assert "refusing to serve on '0.0.0.0' without durable_web_token" in result.output


def test_web_settings_are_checked_where_they_are_read():
    from celery import Celery

    from celery_durable.settings import Settings

    def settings(**conf: Any) -> Settings:
        app = Celery("settings-check", set_as_current=False)
        app.conf.update(conf)
        return Settings.from_app(app)

    assert settings().web_token is None and settings().web_base_url is None
    assert settings(durable_web_base_url="https://d.example.com/").web_base_url == (
        "https://d.example.com"
    )
    with pytest.raises(ConfigurationError, match="durable_web_token: expected a string of at"):
        settings(durable_web_token="short")
    with pytest.raises(ConfigurationError, match="durable_web_secret: expected a string"):
        settings(durable_web_secret=12345678901234567)
    with pytest.raises(ConfigurationError, match="durable_web_base_url: expected an absolute"):
        settings(durable_web_base_url="durable.example.com")


def test_webhook_url_without_its_settings_fails_the_run_saying_which(cli_app):
    with start_worker(cli_app, pool="solo", perform_ping_check=False):
        run = celery_durable.start(web_workflows.pay, 1)
        with pytest.raises(ConfigurationError, match="durable_web_secret and durable_web_base_url"):
            run.result(timeout=15)
    assert run.status() == "failed"


def test_rule_endpoints(cli_app):
    with (
        serve_in_thread(cli_app, token=TOKEN) as url,
        httpx.Client(base_url=url, timeout=15) as web,
    ):
        path = "/api/rules/quiet/enabled"
        assert web.post(path, json={"enabled": True}).status_code == 401
        bad = web.post(path, json={"enabled": "yes"}, headers=AUTH)
        assert bad.status_code == 400 and '{"enabled": true}' in bad.json()["error"]
        assert web.post(path, json={"enabled": True}, headers=AUTH).status_code == 200
        assert cli_json("rules", "list")[1]["enabled"] is True
        assert web.post(path, json={"enabled": None}, headers=AUTH).status_code == 200
        assert cli_json("rules", "list")[1]["enabled"] is False

        event = {
            "type": "task.failed",
            "data": {
                "task_name": "mail.send",
                "task_id": "t-1",
                "error_type": "ConnectionError",
                "error_message": "refused",
            },
        }
        report = web.post("/api/rules/flaky mail/test", json={"event": event}).json()
        assert report["would_fire"] is True and report["actions"][0]["type"] == "webhook"
        both = web.post("/api/rules/flaky mail/test", json={"event": event, "task_id": "x"})
        assert both.status_code == 400 and "either" in both.json()["error"]
        shapeless = web.post("/api/rules/flaky mail/test", json={"event": {"data": 1}})
        assert shapeless.status_code == 400

        reset = web.post("/api/rules/flaky mail/reset-breaker", headers=AUTH)
        assert reset.json() == {"rule": "flaky mail", "breaker": "closed"}
        assert web.get("/api/tasks/t-9/retry-chain").json() == {"chain": ["t-9"]}


def test_clients_share_answers_until_a_change(durable_app, redis_client):
    """Fifty dashboards on one page cost one computation per `shared_for`."""
    first = celery_durable.start(arithmetic, 1, 1)  # no worker: it stays pending
    with (
        serve_in_thread(durable_app, token=TOKEN, shared_for=60) as url,
        httpx.Client(base_url=url, timeout=15) as web,
    ):
        listed = web.get("/api/runs").json()
        assert [r["id"] for r in listed["runs"]] == [first.id]
        second = celery_durable.start(arithmetic, 2, 2)
        commands = int(redis_client.info("stats")["total_commands_processed"])
        for _ in range(20):
            assert web.get("/api/runs").json() == listed  # shared, not computed again
        # Only the INFO calls themselves reached Redis.
        assert int(redis_client.info("stats")["total_commands_processed"]) - commands <= 2
        assert web.post(f"/api/runs/{first.id}/cancel", headers=AUTH).status_code == 200
        after = web.get("/api/runs").json()  # a change forgets every shared answer
        assert [(r["id"], r["status"]) for r in after["runs"]] == [
            (second.id, "pending"),
            (first.id, "cancelled"),
        ]


def test_the_web_command_serves_the_api(cli_app, durable_redis_url):
    """`celery -A app durable web --port P` as a user runs it, in its own process."""
    import os
    import subprocess
    import sys
    import time

    port = free_port()
    command = [sys.executable, "-m", "celery", "-A", "tests.apps.cli_app", "durable", "web"]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env={**os.environ, "DURABLE_CLI_TEST_REDIS_URL": durable_redis_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/rules", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "`durable web` did not answer in 30 s"
                time.sleep(0.1)
        assert [r["name"] for r in answer.json()] == ["flaky mail", "quiet"]
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "static/app.js" in page.text
        script = httpx.get(f"http://127.0.0.1:{port}/static/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    finally:
        process.terminate()
        process.wait(15)
