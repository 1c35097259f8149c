"""The Redis client of the journal, for a plain server, Sentinel or Cluster.

- `redis://`, `rediss://`, `unix://`: one server (or a primary with replicas).
- `sentinel://host:26379;sentinel://host2:26379/0` (Celery's broker syntax):
  the current primary of `durable_redis_sentinel_master`, found through the
  sentinels and followed across failovers.
- any of the above with `durable_redis_cluster = True`: Redis Cluster. Every
  multi-key operation celery_durable does stays within one hash slot.

Commands are retried for about half a minute when the connection drops (a
restart, a failover); the journal tells a resent append from a conflict.
An execution outlives longer outages itself (`workflows/interruptions.py`).

Errors that no retry can fix are not retried: a wrong or missing password,
a user without the permissions, a TLS certificate that does not verify, a
command the server does not know. They are raised at once as
`RedisAccessError`, naming `durable_redis_url` (without its password) and
what to do; a write refused because Redis is out of memory is raised as
`RedisOutOfMemoryError`. redis-py files `AuthenticationError` under
`ConnectionError`, which is why a retry policy on `ConnectionError` alone
would retry a wrong password for ever.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar
from urllib.parse import unquote, urlparse

import redis
from kombu.utils.url import maybe_sanitize_url
from redis.backoff import ExponentialWithJitterBackoff
from redis.client import Pipeline
from redis.exceptions import (
    AuthorizationError,
    ClusterDownError,
    NoPermissionError,
    ReadOnlyError,
    TryAgainError,
)
from redis.retry import Retry

from .errors import ConfigurationError, DurableError, RedisAccessError, RedisOutOfMemoryError
from .settings import Settings

T = TypeVar("T")

RedisClient: TypeAlias = Any
"""What `make_client` returns: a `JournalRedis`, a Sentinel primary or a
`RedisCluster` (which is no `redis.Redis`), all with the same commands and
none with `decode_responses`, so every reply is bytes. redis-py types each
reply for both modes (`bytes | str`), which would ask for a check at every
read that can never fail; the journal's code names its client with this."""

RETRIES = 40  # with the backoff below: about 35 s of trying before an error is raised
CONNECT_TIMEOUT = 5.0  # seconds: an unreachable host fails like a refused connection

# TLS failures that a new attempt cannot fix: the certificate, or no TLS on the port.
_TLS_CONFIG_REASONS = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"})


def make_client(settings: Settings) -> RedisClient:
    retry = ClassifyingRetry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=RETRIES)
    retrying: dict[str, Any] = {
        "retry": retry,
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }
    url = settings.redis_url
    if url.startswith("sentinel://"):
        client = _sentinel_primary(url, settings, retrying)
    elif settings.redis_cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, retry=retry)
    else:
        client = JournalRedis.from_url(url, health_check_interval=30, **retrying)
    client.durable_url = maybe_sanitize_url(url)
    return client


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
        settings.redis_sentinel_master,
        redis_class=JournalRedis,
        db=db,
        password=password,
        socket_timeout=5,
        **retrying,
    )


# -- telling errors apart ------------------------------------------------------------


def is_permanent(error: BaseException) -> bool:
    """Would trying again fail the same way until someone changes a setting?"""
    if isinstance(error, RedisAccessError):
        return True
    if isinstance(error, redis.AuthenticationError | AuthorizationError):
        return True
    if isinstance(error, NoPermissionError):
        return True
    if isinstance(error, redis.ResponseError) and _unknown_command(error):
        return True
    return _tls_problem(error) is not None


def is_transient(error: BaseException) -> bool:
    """A connection lost or refused, a timeout, a server still loading its data,
    a primary demoted by a failover under way, a cluster resharding."""
    if is_permanent(error):
        return False
    return isinstance(
        error,
        redis.ConnectionError
        | redis.TimeoutError
        | ReadOnlyError
        | TryAgainError
        | ClusterDownError,
    )


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, RedisOutOfMemoryError | redis.OutOfMemoryError)


def _unknown_command(error: BaseException) -> bool:
    text = str(error).lower()
    return text.startswith(("unknown command", "err unknown command"))


def _tls_problem(error: BaseException) -> BaseException | None:
    """The TLS error behind a ConnectionError, if it is one no retry can fix."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        if isinstance(cause, ssl.SSLError) and cause.reason in _TLS_CONFIG_REASONS:
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def translate(error: BaseException, url: str) -> DurableError | None:
    """The celery_durable error to raise for a permanent or out-of-memory error, else None."""
    where = f"durable_redis_url {url}"
    if isinstance(error, redis.AuthenticationError):
        return RedisAccessError(
            f"{where}: authentication failed ({error}); put the right password (and user) "
            "in durable_redis_url: redis://[USER]:PASSWORD@host:port/db"
        )
    if isinstance(error, AuthorizationError | NoPermissionError):
        return RedisAccessError(
            f"{where}: the Redis user may not do what celery_durable needs ({error}); "
            "grant it the commands and keys (ACL SETUSER ... +@all ~durable:*) or use another user"
        )
    if isinstance(error, redis.ResponseError) and _unknown_command(error):
        return RedisAccessError(
            f"{where}: the server does not know a command celery_durable uses ({error}); "
            "use Redis 7 or newer, with no renamed or disabled commands"
        )
    tls = _tls_problem(error)
    if tls is not None:
        return RedisAccessError(
            f"{where}: TLS failed ({tls}); check the server's certificate, the port (TLS or "
            "not), and the ssl_ca_certs / ssl_cert_reqs options of the rediss:// URL"
        )
    if isinstance(error, redis.OutOfMemoryError):
        return RedisOutOfMemoryError(
            f"{where}: Redis is out of memory and refused a write ({error}); nothing of it "
            "was recorded. Raise maxmemory, free memory, or use maxmemory-policy volatile-ttl "
            "(finished runs expire first); not allkeys-*, which would evict live journals"
        )
    return None


class ClassifyingRetry(Retry):
    """redis-py's Retry, except for errors that no retry can fix (see `is_permanent`)."""

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            if is_permanent(error):
                return False
            return is_retryable(error) if is_retryable is not None else True

        return super().call_with_retry(do, fail, retryable, with_failure_count)


class JournalRedis(redis.Redis):
    """A Redis client whose permanent and out-of-memory errors say what to do."""

    durable_url = "redis"

    def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute_command(*args, **options)
        except redis.RedisError as exc:
            translated = translate(exc, self.durable_url)
            if translated is None:
                raise
            raise translated from exc

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> JournalPipeline:
        pipe = JournalPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.durable_url = self.durable_url
        return pipe


class JournalPipeline(Pipeline):
    durable_url = "redis"

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return super().execute(raise_on_error)
        except redis.RedisError as exc:
            translated = translate(exc, self.durable_url)
            if translated is None:
                raise
            raise translated from exc
