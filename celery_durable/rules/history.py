"""Every matched evaluation of a rule, kept in a per-rule Redis stream.

An entry records the time, the trigger event, the conditions and how they
held, each action's result, the breaker's state and the outcome: success,
failure or skipped. Streams are trimmed to `durable_rule_history_maxlen`.
"""

from __future__ import annotations

from typing import Any

import redis

from ..codec import packb_lenient, unpackb
from ..keys import Keys
from ..redaction import without_arguments

SUCCESS, FAILURE, SKIPPED = "success", "failure", "skipped"


class RuleHistory:
    def __init__(self, client: redis.Redis, keys: Keys, maxlen: int, redact_args: bool = False):
        self.client = client
        self.keys = keys
        self.maxlen = maxlen
        self.redact_args = redact_args  # durable_redact_args: no task arguments kept here

    def record(self, rule_name: str, entry: dict[str, Any]) -> None:
        event = entry.get("event")
        if self.redact_args and isinstance(event, dict) and isinstance(event.get("data"), dict):
            entry = {**entry, "event": {**event, "data": without_arguments(event["data"])}}
        self.client.xadd(
            self.keys.rule_history(rule_name),
            {"h": packb_lenient(entry)},
            maxlen=self.maxlen,
            approximate=True,
        )

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
