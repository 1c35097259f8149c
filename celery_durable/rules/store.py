"""The rules stored in Redis: a versioned set, and the record of its changes.

Rules from `durable_rules` live in the app's configuration; rules added at
run time (`save_rules`, `rules add`) live here, as written (JSON), in one
hash beside a version number. Every change writes the hash, increments the
version, records the change and publishes the new version, all in one
MULTI, so a reader that takes the hash and the version in one MULTI always
sees a whole rule set, never half of a change. Processes compare the version
with the one they loaded (see `RuleEngine.refresh`) and reload on a change.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from ..keys import Keys

# The change record keeps about this many entries (XADD MAXLEN ~).
MAX_CHANGES = 10_000
# Concurrent writers retry their optimistic transaction this many times.
WRITE_ATTEMPTS = 50


def actor() -> dict[str, str]:
    """Who makes a change: this host and the user running this process."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in a container: the uid says who
        user = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return {"host": socket.gethostname(), "user": user, "pid": str(os.getpid())}


def encode_spec(spec: Mapping[str, Any]) -> str:
    """A rule as stored: JSON, which keeps what a YAML or JSON rule holds.

    Raises TypeError/ValueError for a value JSON cannot keep (a YAML date).
    """
    return json.dumps(spec, ensure_ascii=False, allow_nan=False)


class RuleStore:
    """`redact(spec)` makes what the change record keeps of a rule (secrets out)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        redact: Callable[[Any], Any] = lambda spec: spec,
    ):
        self.client = client
        self.keys = keys
        self.redact = redact

    def version(self) -> int:
        return int(self.client.get(self.keys.rules_version()) or 0)

    def read(self) -> tuple[int, dict[str, dict[str, Any]]]:
        """(version, {name: spec}) of the stored rules, taken together in one MULTI."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.keys.rules_version())
        pipe.hgetall(self.keys.stored_rules())
        raw_version, raw_rules = pipe.execute()
        rules = {name.decode(): _spec(spec) for name, spec in sorted(raw_rules.items())}
        return int(raw_version or 0), rules

    def write(
        self, upserts: Mapping[str, Mapping[str, Any]], deletes: tuple[str, ...] = ()
    ) -> tuple[int, list[dict[str, Any]]]:
        """Store `upserts` (replacing rules of those names) and drop `deletes`, as one change.

        Returns the new version and the changes recorded (an unchanged rule
        records none; with nothing changed the version stays). Retries when
        another writer changed the set meanwhile (WATCH on the version).
        """
        encoded = {name: encode_spec(spec) for name, spec in upserts.items()}
        who = actor()
        for _ in range(WRITE_ATTEMPTS):
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.keys.rules_version())
                    version = int(pipe.get(self.keys.rules_version()) or 0)
                    names = [*encoded, *deletes]
                    before: dict[str, Any] = dict(
                        zip(names, pipe.hmget(self.keys.stored_rules(), names), strict=True)
                    )
                    changes = []
                    for name, spec in encoded.items():
                        old = _spec(before[name]) if before[name] is not None else None
                        new = json.loads(spec)
                        if old == new:
                            continue
                        kind = "add" if old is None else "change"
                        changes.append(self._change(kind, name, old, new, who))
                    for name in deletes:
                        if before[name] is not None:
                            old = _spec(before[name])
                            changes.append(self._change("delete", name, old, None, who))
                    if not changes:
                        pipe.unwatch()
                        return version, []
                    version += 1
                    pipe.multi()
                    for change in changes:
                        if change["after"] is None:
                            pipe.hdel(self.keys.stored_rules(), change["rule"])
                        else:
                            pipe.hset(
                                self.keys.stored_rules(), change["rule"], encoded[change["rule"]]
                            )
                        change["version"] = version
                        self._record(pipe, change)
                    pipe.set(self.keys.rules_version(), version)
                    pipe.publish(self.keys.rules_channel(), version)
                    pipe.execute()
                    return version, changes
                except redis.WatchError:
                    continue
        raise redis.WatchError(
            f"the stored rules changed {WRITE_ATTEMPTS} times while this change was made; try again"
        )

    def record_switch(self, name: str, enabled: bool | None, before: bool | None) -> None:
        """Record an enable, disable or clear-switch (switches live beside the set)."""
        action = "clear-switch" if enabled is None else "enable" if enabled else "disable"
        change = self._change(action, name, _switch(before), _switch(enabled), actor())
        change["version"] = self.version()
        pipe = self.client.pipeline(transaction=False)
        self._record(pipe, change)
        pipe.execute()

    def changes(
        self, name: str | None = None, *, limit: int = 50, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Recorded changes, newest first, of one rule or all; `before`: page from this entry id."""
        found: list[dict[str, Any]] = []
        top = f"({before}" if before else "+"
        while len(found) < limit:
            entries: Any = self.client.xrevrange(
                self.keys.rule_changes(), max=top, min="-", count=200
            )
            if not entries:
                break
            for entry_id, fields in entries:
                top = f"({entry_id.decode()}"
                change = json.loads(fields[b"c"])
                if name is None or change["rule"] == name:
                    found.append({"id": entry_id.decode(), **change})
                    if len(found) == limit:
                        break
        return found

    def _change(
        self, action: str, name: str, before: Any, after: Any, who: dict[str, str]
    ) -> dict[str, Any]:
        return {
            "ts": time.time(),
            "action": action,
            "rule": name,
            "before": self.redact(before),
            "after": self.redact(after),
            **who,
        }

    def _record(self, pipe: Any, change: dict[str, Any]) -> None:
        pipe.xadd(
            self.keys.rule_changes(),
            {"c": json.dumps(change, ensure_ascii=False)},
            maxlen=MAX_CHANGES,
            approximate=True,
        )


def _spec(raw: bytes) -> Any:
    """A stored spec; None for one that is not JSON (written by something else)."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _switch(value: bool | None) -> str | None:
    return None if value is None else "on" if value else "off"
