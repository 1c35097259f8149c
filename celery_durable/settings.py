"""celery_durable's settings: `durable_*` keys of the Celery app's config.

Each setting has one line here with its default; the README's settings table
mirrors this module. The known keys are the fields of `Settings` (plus
`EXTRA_SETTINGS`): a `durable_*` key that is neither is a typo to warn about,
and a new field is known without further work.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, fields
from typing import Any

from celery import Celery

from .errors import ConfigurationError
from .options import parse_duration

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_RETENTION = 7 * 86400.0
DEFAULT_MAX_TEXT_BYTES = 8192
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_MAX_RUN_EVENTS = 100_000
MIN_TEXT_BYTES = 256  # room for some text besides the truncation marker
MIN_RUN_EVENTS = 10
PREFIX = "durable_"

# `durable_*` keys read outside `Settings` (none yet): known, so not warned about.
EXTRA_SETTINGS: frozenset[str] = frozenset()

logger = logging.getLogger("celery_durable")


@dataclass(frozen=True)
class Settings:
    redis_url: str
    redis_sentinel_master: str | None = None
    redis_cluster: bool = False
    key_prefix: str = "durable"
    rules: Any = None
    plugins: tuple[str, ...] = ()
    queue: str | None = None
    timer_poll_interval: float = 0.2
    events_maxlen: int = 100_000
    heartbeat_interval: float = 2.0
    worker_timeout: float = 10.0
    redispatch_after: float = 60.0
    blocked_retry_after: float = 300.0
    rule_history_maxlen: int = 1000
    failure_window: float = 3600.0
    action_claim_after: float = 300.0
    # Schedules: how late a tick may start under catch_up="none"; ticks kept per schedule.
    schedule_grace: float = 60.0
    schedule_history_maxlen: int = 100
    redact_args: bool = False
    # Data bounds: how long finished runs are kept, how big things may get.
    retention: float | None = DEFAULT_RETENTION
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES
    max_run_events: int | None = DEFAULT_MAX_RUN_EVENTS
    # The web dashboard and HTTP resumption (`celery durable web`, `webhook_url()`).
    web_token: str | None = None
    web_secret: str | None = None
    web_base_url: str | None = None

    @classmethod
    def from_app(cls, app: Celery) -> Settings:
        conf = app.conf
        warn_unknown_settings(conf)
        prefix = conf.get("durable_key_prefix") or "durable"
        if not isinstance(prefix, str) or any(c in prefix for c in "{} \t\n"):
            raise ConfigurationError(
                f"durable_key_prefix: {prefix!r} must be a string without braces or spaces"
            )
        heartbeat = _positive(conf, "durable_heartbeat_interval", 2.0)
        worker_timeout = _positive(conf, "durable_worker_timeout", 10.0)
        if worker_timeout < 2 * heartbeat:
            raise ConfigurationError(
                f"durable_worker_timeout ({worker_timeout}s) must be at least twice "
                f"durable_heartbeat_interval ({heartbeat}s), or live workers look dead"
            )
        plugins = conf.get("durable_plugins") or ()
        if isinstance(plugins, str):
            plugins = (plugins,)
        transport = conf.get("broker_transport_options") or {}
        cluster = conf.get("durable_redis_cluster", False)
        if not isinstance(cluster, bool):
            raise ConfigurationError(
                f"durable_redis_cluster: expected true or false, got {cluster!r}"
            )
        redact_args = conf.get("durable_redact_args", False)
        if not isinstance(redact_args, bool):
            raise ConfigurationError(
                f"durable_redact_args: expected true or false, got {redact_args!r}"
            )
        return cls(
            redis_url=conf.get("durable_redis_url") or _redis_url_from_broker(app),
            redis_sentinel_master=conf.get("durable_redis_sentinel_master")
            or transport.get("master_name"),
            redis_cluster=cluster,
            key_prefix=prefix,
            rules=conf.get("durable_rules"),
            plugins=tuple(plugins),
            queue=conf.get("durable_queue") or None,
            timer_poll_interval=_positive(conf, "durable_timer_poll_interval", 0.2),
            events_maxlen=int(_positive(conf, "durable_events_maxlen", 100_000)),
            heartbeat_interval=heartbeat,
            worker_timeout=worker_timeout,
            redispatch_after=_positive(conf, "durable_redispatch_after", 60.0),
            blocked_retry_after=_positive(conf, "durable_blocked_retry_after", 300.0),
            rule_history_maxlen=int(_positive(conf, "durable_rule_history_maxlen", 1000)),
            failure_window=_positive(conf, "durable_failure_window", 3600.0),
            action_claim_after=_positive(conf, "durable_action_claim_after", 300.0),
            schedule_grace=_grace(conf),
            schedule_history_maxlen=_at_least(conf, "durable_schedule_history_maxlen", 100, 1),
            redact_args=redact_args,
            retention=_retention(conf),
            max_text_bytes=_at_least(
                conf, "durable_max_text_bytes", DEFAULT_MAX_TEXT_BYTES, MIN_TEXT_BYTES
            ),
            max_payload_bytes=_limit(
                conf, "durable_max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES, 1
            ),
            max_run_events=_limit(
                conf, "durable_max_run_events", DEFAULT_MAX_RUN_EVENTS, MIN_RUN_EVENTS
            ),
            web_token=_secret(conf, "durable_web_token"),
            web_secret=_secret(conf, "durable_web_secret"),
            web_base_url=_base_url(conf),
        )


def known_settings() -> frozenset[str]:
    """Every `durable_*` key celery_durable reads: one per `Settings` field."""
    return frozenset(PREFIX + field.name for field in fields(Settings)) | EXTRA_SETTINGS


def unknown_settings(conf: Any) -> list[str]:
    """One message per `durable_*` key of `conf` that nothing reads, closest known key named."""
    known = known_settings()
    messages = []
    for key in sorted(k for k in conf if isinstance(k, str)):
        if not key.lower().startswith(PREFIX) or key in known:
            continue
        close = difflib.get_close_matches(key.lower(), known, n=1)
        hint = f"did you mean {close[0]}?" if close else "see the settings table in the README"
        messages.append(f"{key}: unknown setting, ignored; {hint}")
    return messages


def warn_unknown_settings(conf: Any) -> None:
    """Log each unknown `durable_*` key: a typo would otherwise go unnoticed."""
    for message in unknown_settings(conf):
        logger.warning(message)


def _redis_url_from_broker(app: Celery) -> str:
    """The broker URL when it is Redis: the journal then needs no new server."""
    broker = app.conf.broker_url or ""
    schemes = ("redis", "rediss", "unix", "sentinel")
    if isinstance(broker, str) and broker.split("://", 1)[0] in schemes:
        # A list of sentinels stays whole; of failover brokers, the first.
        return broker if broker.startswith("sentinel://") else broker.split(";", 1)[0]
    return DEFAULT_REDIS_URL


def _secret(conf: Any, key: str) -> str | None:
    """A token or signing secret: unset, or a string long enough not to be guessed."""
    value = conf.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) < 16:
        raise ConfigurationError(
            f"{key}: expected a string of at least 16 characters (for example "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`), got "
            + ("a shorter string" if isinstance(value, str) else repr(type(value).__name__))
        )
    return value


def _base_url(conf: Any) -> str | None:
    """`durable_web_base_url`: where the outside world reaches `celery durable web`."""
    value = conf.get("durable_web_base_url")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"durable_web_base_url: expected an absolute http:// or https:// URL such as "
            f"'https://durable.example.com', got {value!r}"
        )
    return value.rstrip("/")


def _positive(conf: Any, key: str, default: float) -> float:
    value = conf.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{key}: expected a positive number, got {value!r}")
    return float(value)


def _grace(conf: Any) -> float:
    """`durable_schedule_grace`: a duration ("60s") or seconds, at least 0."""
    seconds = parse_duration(
        conf.get("durable_schedule_grace", 60.0), field="durable_schedule_grace"
    )
    return 60.0 if seconds is None else seconds


def _retention(conf: Any) -> float | None:
    """`durable_retention`: a positive duration, or None to keep finished runs forever."""
    if "durable_retention" not in conf:
        return DEFAULT_RETENTION
    value = conf.get("durable_retention")
    seconds = parse_duration(value, field="durable_retention")
    if seconds is not None and seconds <= 0:
        raise ConfigurationError(
            f"durable_retention: {value!r} would drop a run the moment it ends; give a "
            "positive duration such as '7d', or None to keep finished runs forever"
        )
    return seconds


def _at_least(conf: Any, key: str, default: int, minimum: int, none_ok: bool = False) -> int:
    """An integer setting of at least `minimum`."""
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        also = ", or None for no limit" if none_ok else ""
        raise ConfigurationError(f"{key}: expected an integer >= {minimum}{also}, got {value!r}")
    return value


def _limit(conf: Any, key: str, default: int, minimum: int) -> int | None:
    """A limit: an integer of at least `minimum`, or None (set explicitly) for no limit."""
    if key in conf and conf.get(key) is None:
        return None
    return _at_least(conf, key, default, minimum, none_ok=True)
