"""The HTTP client of actions, whose requests httpx does not log.

httpx logs every request at INFO on the `httpx` logger, with the full URL
(`HTTP Request: POST https://hooks.slack.com/services/T0/B0/xyz "HTTP/1.1
200 OK"`), and a Slack webhook URL is its own credential. Celery's worker
logs INFO by default, so every notification would write the secret to the
worker's log.

Only our client's requests are silenced: `ActionHttpClient.send()` marks the
current context while it sends, and a filter on the `httpx` logger (and
httpcore's) drops records made in a marked context. Requests made by anything
else in the process (the user's own httpx calls, in the same thread or
another) are logged as before. Raising the `httpx` logger's level would
have silenced those too.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

import httpx

_sending = contextvars.ContextVar("celery_durable_action_request", default=False)
# httpx's request line; httpcore's DEBUG traces (a filter on a logger sees only
# records logged on it, not its children's, so each is named).
QUIET_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class _DropActionRequests(logging.Filter):
    """Drops records logged while an action's request is being sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _sending.get()


_FILTER = _DropActionRequests()


def install_log_filter() -> None:
    """Add the filter to httpx's loggers (once; adding it again changes nothing)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).addFilter(_FILTER)  # a no-op when already there


class ActionHttpClient(httpx.Client):
    """httpx.Client whose requests leave no line in httpx's log."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        token = _sending.set(True)
        try:
            return super().send(request, **kwargs)
        finally:
            _sending.reset(token)


def action_http_client() -> ActionHttpClient:
    install_log_filter()
    return ActionHttpClient(follow_redirects=False, headers={"User-Agent": "celery-durable"})
