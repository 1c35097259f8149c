"""A real HTTP server on 127.0.0.1 that records what it is sent.

Rules that post to Slack, to a webhook or to PagerDuty are best tested
against a real socket: the action's own HTTP client, its timeouts, its
retries on 5xx all run as in production. `HttpReceiver` listens on a free
loopback port in a thread of the test process, records every request
(method, path, headers, body, JSON), and answers 200 unless told otherwise:

    with HttpReceiver() as receiver:
        app.conf.durable_rules = [{..., "action": {"type": "webhook",
                                                  "url": f"{receiver.url}/hook"}}]
        receiver.statuses = [503]          # the first request gets a 503, then 200
        ...
        (post,) = receiver.wait_for(1)
        assert post["json"]["rule"] == ...

The pytest fixture `durable_http_receiver` is one per test.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypedDict

__all__ = ["HttpReceiver", "ReceivedRequest", "Reply"]


class ReceivedRequest(TypedDict):
    """One request as it arrived; a dict, so that a test can print and compare it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any  # the body decoded as JSON; None when empty or not JSON
    received_at: float  # time.time()


Reply = tuple[int, Any]
"""A status and a body: bytes and str are sent as they are, anything else as JSON."""


class HttpReceiver:
    """Records requests; answers from `reply`, else `statuses` in order, else `status`.

    `delay` holds every answer back that many seconds (for timeout tests).
    `reply(request)` may return None to fall back to the statuses.
    """

    def __init__(
        self,
        *,
        status: int = 200,
        delay: float = 0.0,
        reply: Callable[[ReceivedRequest], Reply | None] | None = None,
        host: str = "127.0.0.1",
    ):
        self.status = status
        self.statuses: list[int] = []  # answers to give first, in order
        self.delay = delay
        self.reply = reply
        self.requests: list[ReceivedRequest] = []
        self._arrived = threading.Condition()
        self.server = ThreadingHTTPServer((host, 0), _handler_for(self))  # a free port
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash: add any path to it."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def received(self, path: str | None = None) -> list[ReceivedRequest]:
        """The requests so far (to `path` only, if given), oldest first."""
        with self._arrived:
            return [r for r in self.requests if path is None or r["path"] == path]

    def wait_for(
        self, count: int, timeout: float = 10.0, path: str | None = None
    ) -> list[ReceivedRequest]:
        """Wait until `count` requests (to `path`) have arrived; all of them, oldest first.

        Raises AssertionError past `timeout`, so that pytest shows it as a failure.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(got := self.received(path)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    where = f" to {path}" if path else ""
                    raise AssertionError(
                        f"expected {count} request(s){where} within {timeout:g}s, "
                        f"got {len(got)}: {got}"
                    )
                self._arrived.wait(left)
            return got

    def clear(self) -> None:
        with self._arrived:
            self.requests.clear()

    def start(self) -> HttpReceiver:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="durable-http-receiver", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _record(self, request: ReceivedRequest) -> Reply:
        answer = self.reply(request) if self.reply is not None else None
        with self._arrived:
            if answer is None:
                answer = (self.statuses.pop(0) if self.statuses else self.status, b"ok")
            self.requests.append(request)
            self._arrived.notify_all()
        return answer


def _handler_for(receiver: HttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = None
            request = ReceivedRequest(
                method=self.command,
                path=self.path,
                headers=dict(self.headers),
                body=raw,
                json=decoded,
                received_at=time.time(),
            )
            status, body = receiver._record(request)
            if receiver.delay > 0:
                time.sleep(receiver.delay)
            if isinstance(body, str):
                body = body.encode()
            content_type = "text/plain"
            if not isinstance(body, bytes):
                body, content_type = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PUT = do_PATCH = do_DELETE = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads `requests`; a line per request on stderr is noise

    return Handler
