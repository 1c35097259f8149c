"""The suite's `http_receiver` fixture: celery_durable's `durable_http_receiver`.

A real HTTP server on 127.0.0.1 that records what it receives (Slack,
webhooks): `http_receiver.url`, `.requests`, `.wait_for(n)`, and
`.statuses = [503, ...]` for the answers to give first.
"""

from __future__ import annotations

import pytest

from celery_durable.contrib.http_receiver import HttpReceiver

Receiver = HttpReceiver  # the name the suite's tests knew it by


@pytest.fixture
def http_receiver(durable_http_receiver: HttpReceiver) -> HttpReceiver:
    return durable_http_receiver
