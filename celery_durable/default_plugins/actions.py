"""Built-in actions: retry, slack, webhook, revoke.

They run in a worker's action runner (never inside a task), so HTTP calls
may take their time; each one is bounded by its `timeout`.
"""

from __future__ import annotations

import signal as signals
import time
from typing import TYPE_CHECKING, Annotated, Any

from ..errors import ActionSkipped
from ..hookspecs import hookimpl
from ..limits import bound_strings
from ..redaction import redact
from ..rules.base import Action
from ..rules.bounds import Between
from ..rules.task_message import resend

if TYPE_CHECKING:
    from ..activity import Activity
    from ..rules.context import RuleContext

CHAIN_TTL = 7 * 86400
MAX_COUNTDOWN = 3600  # retries wait in the broker as countdown messages: keep them short
# A rule that retries more than this wants a fix, not more retries; the chain
# of retries is kept in Redis, one entry each.
MAX_ATTEMPTS = 100
MAX_BACKOFF_MULTIPLIER = 10.0  # 10**attempt already passes MAX_COUNTDOWN at the 4th retry
# One action runner thread works every job of a worker in turn: an HTTP call
# may hold it this long, times the webhook's attempts.
MAX_HTTP_TIMEOUT = 60.0
MAX_HTTP_RETRIES = 10
HttpTimeout = Annotated[float, Between(0, MAX_HTTP_TIMEOUT, low_open=True)]


class Retry(Action):
    """Send the failed (or orphaned) task again, exactly as it was sent.

    Same args and kwargs (the real objects; or, with `same_arguments: false`,
    the `args` and `kwargs` written in the action, say to fall back to another
    provider), queue or exchange and routing key, priority, headers, time
    limits and callbacks, under a new task id,
    after `delay_seconds` (times `backoff_multiplier` per earlier retry when
    `exponential_backoff`, capped by `max_delay_seconds`), up to
    `max_attempts` retries along the chain original -> retry 1 -> retry 2.
    """

    name = "retry"

    def __init__(
        self,
        delay_seconds: Annotated[float, Between(0, MAX_COUNTDOWN)] = 0,
        max_attempts: Annotated[int, Between(1, MAX_ATTEMPTS)] = 3,
        exponential_backoff: bool = False,
        backoff_multiplier: Annotated[float, Between(1, MAX_BACKOFF_MULTIPLIER)] = 2.0,
        max_delay_seconds: Annotated[float, Between(0, MAX_COUNTDOWN)] = 300,
        same_arguments: bool = True,
        args: list | None = None,
        kwargs: dict | None = None,
    ):
        if same_arguments and (args is not None or kwargs is not None):
            raise ValueError(
                "args and kwargs replace the task's own arguments: "
                "give them with same_arguments: false"
            )
        if not same_arguments:
            _check_plain(args or [], "args")
            _check_plain(kwargs or {}, "kwargs")
            if not all(isinstance(k, str) and k.isidentifier() for k in kwargs or {}):
                raise ValueError("kwargs must map parameter names to values")
        self.delay_seconds = float(delay_seconds)
        self.max_attempts = max_attempts
        self.exponential_backoff = exponential_backoff
        self.backoff_multiplier = float(backoff_multiplier)
        self.max_delay_seconds = float(max_delay_seconds)
        self.same_arguments = same_arguments
        # With same_arguments: false, what the task is sent with instead of its own.
        self.args = None if same_arguments else list(args or [])
        self.kwargs = None if same_arguments else dict(kwargs or {})

    def delay_for(self, attempt: int) -> float:
        """The wait before retry number `attempt + 1`."""
        delay = self.delay_seconds
        if self.exponential_backoff:
            delay *= self.backoff_multiplier**attempt
        return min(delay, self.max_delay_seconds)

    def run(self, event: Activity, context: RuleContext) -> Any:
        message = _message(event)
        attempt = int(message["retry"]["attempt"])
        if attempt >= self.max_attempts:
            raise ActionSkipped(
                f"max_attempts ({self.max_attempts}) reached: "
                f"{message['task_name']} was retried {attempt} time(s)"
            )
        delay = self.delay_for(attempt)
        task_id = resend(context.app, message, countdown=delay, args=self.args, kwargs=self.kwargs)
        root = message["retry"]["root"]
        keys = context.ext.keys
        pipe = context.redis.pipeline(transaction=False)
        pipe.rpush(keys.retry_chain(root), task_id)
        pipe.expire(keys.retry_chain(root), CHAIN_TTL)
        pipe.set(keys.retry_root(task_id), root, ex=CHAIN_TTL)
        pipe.execute()
        return {
            "task_id": task_id,
            "retry_of": message["task_id"],
            "root": root,
            "attempt": attempt + 1,
            "delay": delay,
        }

    def preview(self, event: Activity, context: RuleContext) -> dict[str, Any]:
        message = event.data.get("message") or {}
        attempt = int((message.get("retry") or {}).get("attempt", 0))
        return {
            "type": self.name,
            "task_name": message.get("task_name"),
            "options": message.get("options"),
            "attempt": attempt + 1,
            "delay_seconds": self.delay_for(attempt),
            "would_send": attempt < self.max_attempts,
            "arguments": "the task's own"
            if self.same_arguments
            else {"args": self.args, "kwargs": self.kwargs},
        }


class Slack(Action):
    """Post the rendered `message` to a Slack incoming-webhook URL."""

    name = "slack"
    template_fields = ("message",)
    notification = True
    secret_fields = ("webhook_url",)  # the URL is the credential

    def __init__(
        self,
        webhook_url: str,
        message: str = "{event}: {task_name}{workflow_name} on {worker}: {error_message}",
        timeout: HttpTimeout = 10.0,
    ):
        _check_url(webhook_url)
        self.webhook_url = webhook_url
        self.message = message
        self.timeout = float(timeout)

    def run(self, event: Activity, context: RuleContext) -> Any:
        text = context.render(self.message, event)
        response = context.http.post(self.webhook_url, json={"text": text}, timeout=self.timeout)
        response.raise_for_status()
        return {"status": response.status_code, "text": text}


class Webhook(Action):
    """POST the event as JSON to `url`, with `headers`, retried on errors."""

    name = "webhook"
    notification = True
    secret_fields = ("url",)  # may carry a token (?token=..., a secret path)

    def __init__(
        self,
        url: str,
        headers: dict | None = None,
        timeout: HttpTimeout = 10.0,
        retries: Annotated[int, Between(0, MAX_HTTP_RETRIES)] = 2,
    ):
        _check_url(url)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in (headers or {}).items()):
            raise ValueError("headers must map header names to string values")
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = float(timeout)
        self.retries = retries

    def payload(self, event: Activity, context: RuleContext) -> dict[str, Any]:
        """The JSON posted: the event without the task's message, no text over
        `durable_max_text_bytes` (a 10 MB error message is not posted whole)."""
        data = {k: v for k, v in event.data.items() if k != "message"}
        limit = context.ext.settings.max_text_bytes
        return {
            "rule": context.rule_name,
            "execution_id": context.execution_id,
            "event": {
                "type": event.type,
                "ts": event.ts,
                "data": bound_strings(_jsonable(data), limit),
            },
        }

    def run(self, event: Activity, context: RuleContext) -> Any:
        body = self.payload(event, context)
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 10.0))
            try:
                response = context.http.post(
                    self.url, json=body, headers=self.headers, timeout=self.timeout
                )
            except Exception as exc:  # connection refused, timeout: try again
                last = exc
                continue
            if response.status_code < 500:
                response.raise_for_status()  # a 4xx will not get better: fail now
                return {"status": response.status_code, "attempts": attempt + 1}
            last = RuntimeError(f"{redact(self.url)} answered {response.status_code}")
        raise RuntimeError(f"webhook failed after {self.retries + 1} attempt(s): {last}")

    def preview(self, event: Activity, context: RuleContext) -> dict[str, Any]:
        return {
            "type": self.name,
            "url": redact(self.url),
            "headers": sorted(self.headers),  # names only: values may be tokens
            "payload": self.payload(event, context),
        }


class Revoke(Action):
    """Stop the task: revoke it, terminating it if it is already running."""

    name = "revoke"

    def __init__(self, terminate: bool = True, signal: str = "SIGTERM"):
        if signal not in signals.Signals.__members__:
            raise ValueError(
                f"signal: {signal!r} is not a signal of this system; "
                "use a name such as SIGTERM, SIGINT, SIGKILL, SIGUSR1"
            )
        self.terminate = terminate
        self.signal = signal

    def run(self, event: Activity, context: RuleContext) -> Any:
        task_id = event.data.get("task_id")
        if not task_id:
            raise ValueError(f"a {event.type} event names no task to revoke")
        context.app.control.revoke(task_id, terminate=self.terminate, signal=self.signal)
        return {"revoked": task_id, "terminate": self.terminate, "signal": self.signal}


def _message(event: Activity) -> dict[str, Any]:
    message = event.data.get("message")
    if not message:
        raise ValueError(f"a {event.type} event carries no task message to send again")
    return message


def _check_plain(value: Any, where: str) -> None:
    """Arguments written in a rule must be plain data any serializer can send."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {key!r}")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise ValueError(
            f"{where}: {type(value).__name__} values cannot be sent as task arguments; "
            "use strings, numbers, booleans, null, lists and mappings"
        )


def _check_url(url: Any) -> None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        shown = redact(url) if isinstance(url, str) else repr(url)  # may be a secret, mistyped
        raise ValueError(f"expected an http(s) URL, got {shown}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@hookimpl
def durable_actions() -> list[type[Action]]:
    return [Retry, Slack, Webhook, Revoke]
