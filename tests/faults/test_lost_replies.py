"""A command reaches Redis and is applied, but its reply is lost.

That is what a Redis restart (or a cut connection) does to a command in
flight: the client's retry (celery_durable's Redis client retries for about
half a minute) sends it again. A TCP proxy in front of the test's Redis makes
it happen on purpose, for one chosen command: it forwards the command,
swallows the reply and drops the connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from celery import Celery

import celery_durable
from celery_durable.extension import DurableExtension, extension_for
from tests.apps import client_side, faulty
from tests.faults import wait_until

pytestmark = pytest.mark.slow


class LostReplyProxy:
    """A TCP proxy to Redis that, once told a marker, loses one reply.

    The first command containing the marker goes through to Redis; its reply
    (unless it is an error, such as NOSCRIPT) is swallowed and the client's
    connection dropped. Later commands go through untouched.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.marker: bytes | None = None
        self.lost = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_reply_to(self, marker: bytes) -> None:
        self.marker = marker

    def close(self) -> None:
        self.server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            armed = threading.Event()
            threading.Thread(target=self._up, args=(client, upstream, armed), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, armed), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, armed: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.marker is not None and self.marker in data and not self.lost.is_set():
                    armed.set()
                upstream.sendall(data)
        _close(client, upstream)

    def _down(self, upstream: socket.socket, client: socket.socket, armed: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if armed.is_set() and not data.startswith(b"-"):
                    self.marker = None
                    self.lost.set()
                    break  # applied by Redis; the client never hears of it
                armed.clear()
                client.sendall(data)
        _close(client, upstream)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


@pytest.fixture
def proxy(durable_redis_url: str) -> Iterator[LostReplyProxy]:
    lossy = LostReplyProxy(urlsplit(durable_redis_url).port)
    yield lossy
    lossy.close()


@pytest.fixture
def lossy_client(durable_redis_url: str, proxy: LostReplyProxy) -> Iterator[Celery]:
    """A client app whose journal connection goes through the proxy."""
    app = faulty.make_app(durable_redis_url, main="faults-lossy-client")
    app.conf.durable_redis_url = proxy.url
    with client_side(app):
        yield app


def test_an_append_whose_reply_was_lost_is_recognised_as_its_own(
    ext: DurableExtension, lossy_client: Celery, proxy: LostReplyProxy
):
    run_id = uuid.uuid4().hex
    ext.journal.create(run_id, faulty.steps.definition.name, {"args": [], "kwargs": {}})
    lossy = extension_for(lossy_client)
    proxy.lose_reply_to(ext.keys.run_events(run_id).encode())
    appended = lossy.journal.append(run_id, 1, [("workflow.executing", {"worker": "w"})])
    assert proxy.lost.is_set()  # Redis applied it, the client retried it
    assert [e.seq for e in appended.events] == [2]
    assert [e.type for e in ext.journal.read(run_id)] == ["workflow.started", "workflow.executing"]


def test_an_event_whose_reply_was_lost_is_delivered_once(
    client_app: Celery, lossy_client: Celery, proxy: LostReplyProxy, workers
):
    workers.start_many(1, concurrency=1)
    client_app.set_current()
    run = celery_durable.start(faulty.two_waits, "go", 3.0)
    wait_until(lambda: run.status() == "waiting", timeout=10, what="the run waiting")

    lossy_client.set_current()
    inbox = extension_for(client_app).keys.run_inbox(run.id)
    proxy.lose_reply_to(inbox.encode())
    celery_durable.send_event(run.id, "go", {"n": 1})  # once
    assert proxy.lost.is_set()

    client_app.set_current()
    assert run.result(timeout=15) == [{"n": 1}, None]
