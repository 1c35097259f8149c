"""A stand-in for Slack's incoming webhooks, on 127.0.0.1, in the demo's process.

The Slack rule in `rules.yaml` posts `{"text": ...}` to `${DEMO_SLACK_URL}`;
the demo sets that to this receiver's URL, for its worker too. Each message is
printed as it arrives, the way the channel would show it (emoji shortcodes
drawn, `*bold*` markers dropped), and kept for the demo's checks.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

CHANNEL = "#shop-alerts"
PATH = "/services/T0DEMO/B0SHOP/alerts"  # shaped like a real webhook's path
EMOJI = {
    ":x:": "\u274c",
    ":rotating_light:": "\U0001f6a8",
    ":warning:": "\u26a0\ufe0f",
    ":white_check_mark:": "\u2705",
    ":package:": "\U0001f4e6",
}
_BOLD = re.compile(r"\*([^*\n]+)\*")


@dataclass(frozen=True)
class SlackMessage:
    text: str
    received_at: float

    @property
    def shown(self) -> str:
        """The text as the Slack client would display it (no markup characters)."""
        text = _BOLD.sub(r"\1", self.text)
        for code, emoji in EMOJI.items():
            text = text.replace(code, emoji)
        return text


class SlackReceiver:
    """`with SlackReceiver(print_line) as slack:` serves on `slack.url` until the block ends."""

    def __init__(self, show: Callable[[str], None]):
        self.show = show
        self.messages: list[SlackMessage] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    text = str(json.loads(raw)["text"])
                except (ValueError, KeyError, TypeError):
                    # What Slack answers to a body without text.
                    self._answer(400, b"no_text")
                    return
                receiver._received(text)
                self._answer(200, b"ok")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass  # the demo prints the messages themselves

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="demo-slack", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{PATH}"

    def _received(self, text: str) -> None:
        message = SlackMessage(text, time.time())
        with self._lock:
            self.messages.append(message)
        clock = time.strftime("%H:%M:%S", time.localtime(message.received_at))
        self.show(f"  [slack {CHANNEL} {clock}] Shop alerts: {message.shown}")

    def received(self) -> list[SlackMessage]:
        with self._lock:
            return list(self.messages)

    def __enter__(self) -> SlackReceiver:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)
