"""`webhook_url(name)`: a signed URL that delivers an event to this run when POSTed.

PyWorkflow's "pause for webhooks": a workflow hands the URL to a third party
(from a step), then `wait_for_event(name)`; the third party's POST of JSON to
`celery durable web` delivers its body as the event's payload, with no API
token. The URL carries an HMAC-SHA256 of (run id, event name, nonce) under
`durable_web_secret`, so it can neither be forged nor pointed at another run
or event.

The nonce is the run's replay position where the URL was made (and the
attempt): the same on every replay, so the URL is stable, and distinct for
each place in the code that makes one. It is also the send's id in the run's
inbox, so a third party that POSTs the same URL twice (a retry after a lost
reply) delivers the event once.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import quote

from ..errors import ConfigurationError, NotInWorkflowError
from ..extension import DurableExtension
from .context import current_execution
from .control import deliver

HOOK_PATH = "/hooks"


def webhook_url(name: str) -> str:
    """An absolute URL that delivers event `name` to this run when POSTed JSON.

    The base comes from `durable_web_base_url` and the signature from
    `durable_web_secret`; both must be set. Call it in the workflow's body
    (the URL is the same on replay), pass it to a step that tells the third
    party, then `wait_for_event(name)`.
    """
    execution = current_execution.get()
    if execution is None:
        raise NotInWorkflowError(
            "webhook_url() can only be called inside a running workflow's body; make the "
            "URL there and pass it to the step that sends it"
        )
    if not isinstance(name, str) or not name or name.startswith("child:"):
        raise ValueError(
            f"webhook_url(): the event name must be a non-empty string not starting with "
            f"'child:', got {name!r}"
        )
    settings = execution.ext.settings
    if not settings.web_secret or not settings.web_base_url:
        missing = [
            key
            for key, value in (
                ("durable_web_secret", settings.web_secret),
                ("durable_web_base_url", settings.web_base_url),
            )
            if not value
        ]
        raise ConfigurationError(
            f"webhook_url() needs {' and '.join(missing)} in the app's config: the secret "
            "signs the URL, the base URL is where `celery durable web` is reached from outside"
        )
    nonce = f"{execution.state.attempt}.{execution.cursor}"
    signature = sign(settings.web_secret, execution.run_id, name, nonce)
    return (
        f"{settings.web_base_url}{HOOK_PATH}/{quote(execution.run_id, safe='')}/"
        f"{quote(name, safe='')}?n={nonce}&sig={signature}"
    )


def sign(secret: str, run_id: str, name: str, nonce: str) -> str:
    """The URL's signature: HMAC-SHA256 of run, event and nonce, hex."""
    message = "\n".join((run_id, name, nonce)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class BadSignatureError(ConfigurationError):
    """The URL's signature does not match: forged, altered, or signed with another secret."""


def deliver_hook(
    ext: DurableExtension, run_id: str, name: str, nonce: str, signature: str, payload: Any
) -> bool:
    """Check a webhook URL's signature (in constant time) and deliver its event once:
    True if delivered now, False if this URL's event was delivered before.

    Raises `BadSignatureError` for a wrong signature (or no secret set),
    `RunNotFoundError`, `RunFinishedError`, `EncodingError` as `send_event()`.
    """
    secret = ext.settings.web_secret
    if not secret:
        raise BadSignatureError("durable_web_secret is not set: no webhook URL is valid")
    expected = sign(secret, run_id, name, nonce)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise BadSignatureError("the webhook URL's signature does not match")
    return deliver(ext, run_id, name, payload, send_id=f"hook:{nonce}:{name}")
