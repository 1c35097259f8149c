"""Keeping secrets out of logs, Redis and what the commands print.

Two kinds of secret pass through celery_durable:

- The parameters of actions that *are* credentials: a Slack incoming-webhook
  URL, a webhook URL with `?token=`. Wherever an action is shown or stored
  (dry runs, rule history, error messages, logs) such a value appears as
  `redact()` makes it: scheme and host, then a short hash of the whole, so
  two URLs can still be told apart (`https://hooks.slack.com/…#a1b2c3`).
  Which parameters are secret is declared by each action
  (`Action.secret_fields`).
- Task arguments, which may hold passwords. With `durable_redact_args`,
  no repr of them goes into events, rule history or action payloads:
  `ARGS_PLACEHOLDER` stands in, and the task's message (what a retry
  re-sends) is kept only in the action job that needs it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

ARGS_PLACEHOLDER = "<redacted: durable_redact_args>"
ARGUMENT_FIELDS = ("args_repr", "kwargs_repr")
# What of a task's message may be stored without its arguments: where it went.
ROUTING_OPTIONS = (
    "queue",
    "exchange",
    "routing_key",
    "priority",
    "time_limit",
    "soft_time_limit",
    "expires",
)

_URL = re.compile(r"https?://[^\s'\"<>]+", re.IGNORECASE)


def fingerprint(value: str) -> str:
    """A short hash: tells two secrets apart without revealing either."""
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:6]


def redact_url(url: str) -> str:
    """`https://hooks.slack.com/…#a1b2c3`: scheme and host kept, the rest hashed."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not parseable as a URL (a bad port, say): hide it all
        return f"…#{fingerprint(url)}"
    if not parts.scheme or not host:
        return f"…#{fingerprint(url)}"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}/…#{fingerprint(url)}"


def redact(value: Any) -> str:
    """A secret parameter as it may be shown: a URL keeps its host, anything else a hash."""
    text = value if isinstance(value, str) else repr(value)
    if _URL.fullmatch(text):
        return redact_url(text)
    return f"…#{fingerprint(text)}"


def scrub(text: str, secrets: Iterable[Any] = ()) -> str:
    """`text` (an error message, say) with every URL and every given secret redacted.

    httpx puts the URL in its messages (`Client error '404 Not Found' for url
    'https://hooks.slack.com/services/...'`), so every URL goes, not only the
    ones known to be secret.
    """
    for secret in secrets:
        if isinstance(secret, str) and secret:
            text = text.replace(secret, redact(secret))
    return _URL.sub(lambda m: m.group(0) if "/…#" in m.group(0) else redact_url(m.group(0)), text)


def argument_placeholders(data: dict[str, Any]) -> dict[str, Any]:
    """Event data whose argument reprs are `ARGS_PLACEHOLDER` (a copy).

    What rules see: `{task_args}` and webhook payloads show the placeholder.
    The task's message stays, for a retry to re-send.
    """
    if not any(data.get(key) for key in ARGUMENT_FIELDS):
        return data
    return {**data, **{key: ARGS_PLACEHOLDER for key in ARGUMENT_FIELDS if data.get(key)}}


def without_arguments(data: dict[str, Any]) -> dict[str, Any]:
    """Event data with no task argument in it, for what is stored or shown.

    The reprs become `ARGS_PLACEHOLDER`; the task's message keeps its name,
    id, retry position and routing, and loses its body, headers (Celery's
    carry `argsrepr`) and callbacks (signatures with arguments of their own).
    """
    out = dict(argument_placeholders(data))
    message = out.get("message")
    if isinstance(message, dict):
        options = message.get("options") or {}
        out["message"] = {
            "task_name": message.get("task_name"),
            "task_id": message.get("task_id"),
            "retry": message.get("retry"),
            "options": {k: v for k, v in options.items() if k in ROUTING_OPTIONS},
            "body": ARGS_PLACEHOLDER,
        }
    return out
