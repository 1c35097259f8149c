"""celery_durable.contrib's helpers for users' tests: the HTTP receiver, the worker processes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from celery_durable.contrib.http_receiver import HttpReceiver
from celery_durable.contrib.workers import WorkerProcessError, WorkerProcesses


def test_the_receiver_records_posts_and_answers_as_told(durable_http_receiver: HttpReceiver):
    durable_http_receiver.statuses = [503]
    with httpx.Client(base_url=durable_http_receiver.url) as client:
        first = client.post("/hook", json={"n": 1}, headers={"X-Token": "s3cret"})
        second = client.post("/other", content=b"not json")
    assert (first.status_code, second.status_code) == (503, 200)
    hook, other = durable_http_receiver.wait_for(2)
    assert (hook["method"], hook["path"], hook["json"]) == ("POST", "/hook", {"n": 1})
    assert hook["headers"]["X-Token"] == "s3cret"
    assert (other["body"], other["json"]) == (b"not json", None)
    assert durable_http_receiver.received("/other") == [other]


def test_the_receiver_replies_with_a_function_and_after_a_delay():
    def reply(request):
        return 202, {"echo": request["json"]["id"]}

    with HttpReceiver(reply=reply, delay=0.3) as receiver:
        began = time.monotonic()
        answer = httpx.post(f"{receiver.url}/v2/enqueue", json={"id": "x"}, timeout=5)
        assert time.monotonic() - began >= 0.3
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(receiver.url, json={"id": "y"}, timeout=0.05)
    assert (answer.status_code, answer.json()) == (202, {"echo": "x"})


def test_wait_for_fails_the_test_past_its_deadline(durable_http_receiver: HttpReceiver):
    with pytest.raises(AssertionError, match=r"expected 1 request\(s\) to /x within 0.1s, got 0"):
        durable_http_receiver.wait_for(1, timeout=0.1, path="/x")


def test_worker_processes_need_an_app(durable_redis_url: str, tmp_path: Path):
    with (
        WorkerProcesses(durable_redis_url, tmp_path) as workers,
        pytest.raises(WorkerProcessError, match="durable_worker_processes_options"),
    ):
        workers.start()
