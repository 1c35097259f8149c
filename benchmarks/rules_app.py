"""The Celery app and tasks that `benchmarks/rules_overhead.py` measures.

The worker imports this module with `celery -A benchmarks.rules_app worker`.
It finds its Redis (broker, result backend and journal alike) in the
environment variable named by `REDIS_URL_ENV`, and which configuration to
run in the one named by `CONFIG_ENV`:

- `plain` (the default): a plain Celery app, celery_durable not installed;
- `installed`: the same app with `celery_durable.install(app)` and no rules;
- `rules`: installed, with the ten rules of `RULES` loaded, none of which
  matches the benchmark's tasks (their actions point at 127.0.0.1 URLs that
  are never called);
- `rules_noxadd` (a diagnostic for `benchmarks/rules_profile.py`): as
  `rules`, but the extension's XADD calls (the global event stream in
  `emit`) are dropped, to see what that one round trip per failure costs.

With `PROFILE_ENV` set to a directory, each pool process profiles itself
with cProfile and writes `pool-<pid>.prof` there when it exits
(`benchmarks/rules_profile.py` uses it).

Every configuration counts completions the same way: a `task_postrun`
receiver (which Celery sends after `task_failure` and its receivers, so a
failed task counts once the extension has reported it) runs one Lua call that
increments `DONE_KEY` and records the time of the first and of the latest
completion.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_postrun

REDIS_URL_ENV = "CELERY_DURABLE_BENCH_REDIS_URL"
CONFIG_ENV = "CELERY_DURABLE_BENCH_RULES_CONFIG"
PROFILE_ENV = "CELERY_DURABLE_BENCH_PROFILE_DIR"
CONFIGS = ("plain", "installed", "rules", "rules_noxadd")
BENCH_QUEUE = "rules_bench"  # the worker consumes it only while a batch is measured

DONE_KEY = "rules_bench:done"
FIRST_KEY = "rules_bench:first"
LAST_KEY = "rules_bench:last"
COUNTED = ("rules_bench.ok", "rules_bench.fail")

# Ten rules, none of which can match `ok` or `fail` (task names rules_bench.*,
# queue rules_bench, error "ValueError: expected failure <i>").
NEVER = "http://127.0.0.1:9"  # discard port: nothing listens, nothing is ever sent
RULES: list[dict[str, Any]] = [
    {
        "name": "retry-other-tasks",
        "trigger": {"event": "task.failed", "conditions": {"task_name_pattern": "other.*"}},
        "action": {"type": "retry", "delay_seconds": 5, "max_attempts": 3},
    },
    {
        "name": "alert-elsewhere-queue",
        "trigger": {"event": "task.failed", "conditions": {"queue": "elsewhere"}},
        "action": {"type": "slack", "webhook_url": f"{NEVER}/slack/elsewhere"},
    },
    {
        "name": "connection-errors",
        "trigger": {
            "event": "task.failed",
            "conditions": {"error_pattern": r"^ConnectionRefusedError: .*never"},
        },
        "action": {"type": "webhook", "url": f"{NEVER}/hooks/connection"},
    },
    {
        "name": "billing-timeouts",
        "trigger": {
            "event": "task.failed",
            "conditions": {
                "task_name_pattern": "billing.*",
                "queue": ["payments", "invoices"],
                "error_pattern": "Timeout",
            },
        },
        "actions": [
            {"type": "slack", "webhook_url": f"{NEVER}/slack/billing"},
            {"type": "retry", "delay_seconds": 30, "exponential_backoff": True},
        ],
    },
    {
        "name": "mail-queue-failures",
        "trigger": {"event": "task.failed", "conditions": {"queue": ["emails", "sms"]}},
        "action": {"type": "webhook", "url": f"{NEVER}/hooks/mail", "retries": 0},
    },
    {
        "name": "very-slow-tasks",
        "trigger": {"event": "task.execution_time_exceeded", "threshold_seconds": 3600},
        "action": {"type": "slack", "webhook_url": f"{NEVER}/slack/slow"},
    },
    {
        "name": "worker-lost",
        "trigger": {"event": "worker.offline"},
        "action": {"type": "slack", "webhook_url": f"{NEVER}/slack/workers"},
    },
    {
        "name": "orphaned-reports",
        "trigger": {"event": "task.orphaned", "conditions": {"task_name_pattern": "reports.*"}},
        "action": {"type": "retry"},
    },
    {
        "name": "order-workflows",
        "trigger": {
            "event": "workflow.failed",
            "conditions": {"workflow_name_pattern": "orders.*"},
        },
        "action": {"type": "webhook", "url": f"{NEVER}/hooks/orders"},
    },
    {
        "name": "workflow-fatal-errors",
        "trigger": {"event": "workflow.failed", "conditions": {"error_pattern": "FatalError"}},
        "action": {"type": "slack", "webhook_url": f"{NEVER}/slack/workflows"},
    },
]

CONFIG = os.environ.get(CONFIG_ENV, "plain")
if CONFIG not in CONFIGS:
    raise RuntimeError(f"{CONFIG_ENV}={CONFIG!r}: expected one of {', '.join(CONFIGS)}")

app = Celery("rules_bench")
app.conf.broker_connection_retry_on_startup = True
if CONFIG != "plain":
    import celery_durable

    celery_durable.install(app)
if CONFIG in ("rules", "rules_noxadd"):
    app.conf.durable_rules = RULES


def use_redis(url: str) -> None:
    """Point the broker, the result backend and the journal at `url` (before first use)."""
    app.conf.update(broker_url=url, result_backend=url, durable_redis_url=url)


use_redis(os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"))


class _WithoutXadd:
    """A Redis client whose XADD does nothing; everything else goes to `client`."""

    def __init__(self, client: Any):
        self._client = client

    def xadd(self, *args: Any, **kwargs: Any) -> bytes:
        return b"0-0"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


if CONFIG == "rules_noxadd":
    from celery_durable.extension import DurableExtension, installed

    _ext = installed(app)
    assert _ext is not None
    # `redis` is a cached_property: an instance attribute set first takes its place.
    _ext.redis = _WithoutXadd(DurableExtension.redis.func(_ext))  # type: ignore[attr-defined]


# -- the tasks ---------------------------------------------------------------------


@app.task(name="rules_bench.ok", ignore_result=True)
def ok(i: int) -> int:
    return i + 1


@app.task(name="rules_bench.fail", ignore_result=True)
def fail(i: int) -> None:
    raise ValueError(f"expected failure {i}")


# -- counting completions (identical in every configuration) ----------------------

_COUNT_LUA = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('SET', KEYS[2], ARGV[1]) end
redis.call('SET', KEYS[3], ARGV[1])
return n
"""
_count: Any = None


def _counter() -> Any:
    global _count
    if _count is None:  # redis-py reconnects after a fork by itself; one per process
        client = redis.Redis.from_url(app.conf.broker_url)
        _count = client.register_script(_COUNT_LUA)
    return _count


@task_postrun.connect(weak=False)
def _on_postrun(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) in COUNTED:
        _counter()(keys=[DONE_KEY, FIRST_KEY, LAST_KEY], args=[repr(time.time())])


# -- optional profiling of the pool processes --------------------------------------

if os.environ.get(PROFILE_ENV):
    import cProfile

    from celery.signals import worker_process_init, worker_process_shutdown

    _profile = cProfile.Profile()

    @worker_process_init.connect(weak=False)
    def _start_profiling(**_: Any) -> None:
        _profile.enable()

    @worker_process_shutdown.connect(weak=False)
    def _write_profile(**_: Any) -> None:
        _profile.disable()
        _profile.dump_stats(os.path.join(os.environ[PROFILE_ENV], f"pool-{os.getpid()}.prof"))
