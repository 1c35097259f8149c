"""The Redis client of the journal, for a plain server, Sentinel or Cluster.

- `redis://`, `rediss://`, `unix://`: one server (or a primary with replicas).
- `sentinel://host:26379;sentinel://host2:26379/0` (Celery's broker syntax):
  the current primary of `durable_redis_sentinel_master`, found through the
  sentinels and followed across failovers.
- any of the above with `durable_redis_cluster = True`: Redis Cluster. Every
  multi-key operation celery_durable does stays within one hash slot.

Commands are retried for about half a minute when the connection drops (a
restart, a failover); the journal tells a resent append from a conflict.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .errors import ConfigurationError
from .settings import Settings


def make_client(settings: Settings) -> Any:
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=40)
    retrying: dict[str, Any] = {
        "retry": retry,
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }
    url = settings.redis_url
    if url.startswith("sentinel://"):
        return _sentinel_primary(url, settings, retrying)
    if settings.redis_cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, retry=retry)
    return redis.Redis.from_url(url, health_check_interval=30, **retrying)


def _sentinel_primary(url: str, settings: Settings, retrying: dict[str, Any]) -> Any:
    from redis.sentinel import Sentinel

    if not settings.redis_sentinel_master:
        raise ConfigurationError(
            "durable_redis_url is a sentinel:// URL: set durable_redis_sentinel_master to the "
            "monitored primary's name (or broker_transport_options['master_name'])"
        )
    hosts, password, db = [], None, 0
    for part in url.split(";"):
        parsed = urlparse(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ConfigurationError(f"durable_redis_url: {part!r} is not sentinel://host:port")
        hosts.append((parsed.hostname, parsed.port or 26379))
        password = unquote(parsed.password) if parsed.password else password
        if parsed.path.strip("/").isdigit():
            db = int(parsed.path.strip("/"))
    sentinel = Sentinel(hosts, socket_timeout=5)
    return sentinel.master_for(
        settings.redis_sentinel_master, db=db, password=password, socket_timeout=5, **retrying
    )
