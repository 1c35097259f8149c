"""A stand-in for Slack's incoming webhooks, on 127.0.0.1, in the demo's process.

The Slack rule in `rules.yaml` posts `{"text": ...}` to `${DEMO_SLACK_URL}`;
the demo sets that to this receiver's `webhook_url`, for its worker too. Each
message is printed as it arrives, the way the channel would show it (emoji
shortcodes drawn, `*bold*` markers dropped), and kept for the demo's checks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from celery_durable.contrib.http_receiver import HttpReceiver, ReceivedRequest, Reply

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


class SlackReceiver(HttpReceiver):
    """`with SlackReceiver(print_line) as slack:` serves on `slack.webhook_url`."""

    def __init__(self, show: Callable[[str], None]):
        super().__init__(reply=self._answer)
        self.show = show

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{PATH}"

    def messages(self) -> list[SlackMessage]:
        """The messages received so far, oldest first."""
        found = [(_text(r), r["received_at"]) for r in self.received(PATH)]
        return [SlackMessage(text, at) for text, at in found if text is not None]

    def _answer(self, request: ReceivedRequest) -> Reply:
        text = _text(request)
        if text is None:
            return 400, b"no_text"  # what Slack answers to a body without text
        message = SlackMessage(text, request["received_at"])
        clock = time.strftime("%H:%M:%S", time.localtime(message.received_at))
        self.show(f"  [slack {CHANNEL} {clock}] Shop alerts: {message.shown}")
        return 200, b"ok"


def _text(request: ReceivedRequest) -> str | None:
    body = request["json"]
    return str(body["text"]) if isinstance(body, dict) and "text" in body else None
