"""Which journal a run message belongs to: a key prefix and a Redis fingerprint.

A run's message carries only its id; the journal that holds the run is the
worker's own (`durable_key_prefix` on `durable_redis_url`). Apps that share a
broker queue but not a journal (two prefixes, or a client and workers that
disagree on the Redis URL) would otherwise receive each other's runs and drop
them as unknown. So every run message names its journal, and a worker of
another journal hands it back to the queue (see `worker/run_task.py`).

A worker that receives a run message of another journal forwards it to that
journal's own queue (`JournalId.queue`), which every worker of that journal
consumes besides its usual queues, and which no other worker reads.

The fingerprint is a short hash of where the Redis is (scheme family, host,
port or socket path, database; the sentinels and primary name), never of the
credentials: it travels in broker messages and logs. Two URLs for one server
(`localhost` and `127.0.0.1`) fingerprint differently; the worker then checks
whether the run is in its own journal before it hands the message back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

from ..settings import Settings

DEFAULT_PORT = 6379
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class JournalId:
    prefix: str
    redis: str  # a fingerprint of the Redis location, see `redis_fingerprint`

    def as_message(self) -> dict[str, str]:
        """What a run message carries (JSON- and msgpack-safe)."""
        return {"prefix": self.prefix, "redis": self.redis}

    @classmethod
    def from_message(cls, value: Any) -> JournalId | None:
        """The journal a message names; None for a message that names none (older senders)."""
        if not isinstance(value, dict):
            return None
        prefix, redis = value.get("prefix"), value.get("redis")
        if not isinstance(prefix, str) or not isinstance(redis, str):
            return None
        return cls(prefix, redis)

    @property
    def queue(self) -> str:
        """The broker queue of this journal's run messages that strayed elsewhere."""
        return f"celery_durable.journal.{self.prefix}.{self.redis}"

    def __str__(self) -> str:
        return f"key prefix {self.prefix!r} on Redis {self.redis}"


def journal_id(settings: Settings) -> JournalId:
    return JournalId(settings.key_prefix, redis_fingerprint(settings))


def redis_fingerprint(settings: Settings) -> str:
    """12 hex digits naming the journal's Redis location, without credentials."""
    location = _location(settings.redis_url, settings.redis_sentinel_master)
    if settings.redis_cluster:
        location = f"cluster+{location}"
    return hashlib.sha256(location.encode()).hexdigest()[:12]


def _location(url: str, sentinel_master: str | None) -> str:
    if url.startswith("sentinel://"):
        hosts = []
        db = "0"
        for part in url.split(";"):
            parsed = urlparse(part.strip())
            hosts.append(f"{(parsed.hostname or '').lower()}:{parsed.port or SENTINEL_PORT}")
            db = _db(parsed) or db
        return f"sentinel://{','.join(sorted(hosts))}/{sentinel_master or ''}/{db}"
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        return f"unix://{parsed.path}/{_db(parsed, path_is_socket=True) or '0'}"
    # redis:// and rediss:// reach the same server: TLS is how, not where.
    host = (parsed.hostname or "localhost").lower()
    return f"redis://{host}:{parsed.port or DEFAULT_PORT}/{_db(parsed) or '0'}"


def _db(parsed: Any, *, path_is_socket: bool = False) -> str | None:
    query = parse_qs(parsed.query).get("db")
    if query:
        return query[0]
    if not path_is_socket and parsed.path.strip("/").isdigit():
        return str(int(parsed.path.strip("/")))
    return None
