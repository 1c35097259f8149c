"""Every matched evaluation of a rule, kept in a per-rule Redis stream.

An entry records the time, the trigger event, the conditions and how they
held, each action's result, the breaker's state and the outcome: success,
failure or skipped. Streams are trimmed to `durable_rule_history_maxlen`.
"""

from __future__ import annotations

from typing import Any

from ..codec import packb_lenient, unpackb
from ..keys import Keys
from ..limits import bound_strings
from ..redaction import without_arguments
from ..redis_client import RedisClient
from ..settings import DEFAULT_MAX_TEXT_BYTES

SUCCESS, FAILURE, SKIPPED = "success", "failure", "skipped"


class RuleHistory:
    """`text_limit` cuts every text of an entry (error messages, tracebacks,
    action results) to that many bytes; `retention` (seconds, None for ever)
    drops the history of a rule that has not fired for that long (a rule
    renamed or removed); `redact_args` (durable_redact_args) keeps task
    arguments out of it."""

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        maxlen: int,
        *,
        text_limit: int = DEFAULT_MAX_TEXT_BYTES,
        retention: float | None = None,
        redact_args: bool = False,
    ):
        self.client = client
        self.keys = keys
        self.maxlen = maxlen
        self.text_limit = text_limit
        self.retention = retention
        self.redact_args = redact_args

    def record(self, rule_name: str, entry: dict[str, Any]) -> None:
        event = entry.get("event")
        if self.redact_args and isinstance(event, dict) and isinstance(event.get("data"), dict):
            entry = {**entry, "event": {**event, "data": without_arguments(event["data"])}}
        key = self.keys.rule_history(rule_name)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(
            key,
            {"h": packb_lenient(bound_strings(entry, self.text_limit))},
            maxlen=self.maxlen,
            approximate=True,
        )
        if self.retention is not None:
            pipe.expire(key, max(1, int(self.retention)))
        pipe.execute()

    def read(
        self, rule_name: str, *, limit: int = 50, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; `before` is an entry id to page from (exclusive)."""
        top = f"({before}" if before else "+"
        entries = self.client.xrevrange(
            self.keys.rule_history(rule_name), max=top, min="-", count=limit
        )
        return [{"id": entry_id.decode(), **unpackb(fields[b"h"])} for entry_id, fields in entries]

    def last(self, rule_name: str) -> dict[str, Any] | None:
        found = self.read(rule_name, limit=1)
        return found[0] if found else None
