"""An app with celery_durable installed is freed like any other app once dropped.

Apps are made per test (`durable_app`, Celery's `celery_app` fixture): an
extension that kept every app alive would grow a test session without bound.
"""

from __future__ import annotations

import gc
import weakref

from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable.extension import extension_for
from celery_durable.rules.engine import rule_engine


def _make_apps(count: int, url: str) -> list[weakref.ref[Celery]]:
    refs = []
    for index in range(count):
        app = Celery(f"memory-{index}", broker=url, set_as_current=False)
        app.conf.update(durable_redis_url=url, durable_rules=[])
        ext = celery_durable.install(app)
        app.finalize()
        _ = ext.settings, ext.keys, ext.journal, rule_engine(ext)  # what a client, a worker touch
        ext.redis.close()
        refs.append(weakref.ref(app))
    return refs


def test_installed_apps_are_freed_when_dropped(durable_redis_url):
    refs = _make_apps(20, durable_redis_url)
    gc.collect()
    alive = [ref() for ref in refs if ref() is not None]
    assert not alive, f"{len(alive)} of 20 installed apps are still alive"


def test_an_extension_still_serves_its_live_app(durable_redis_url):
    app = Celery("kept", broker=durable_redis_url, set_as_current=False)
    ext = celery_durable.install(app)
    gc.collect()
    assert extension_for(app) is ext and ext.app is app


def _alive_after_workers(count: int, url: str, *, install: bool) -> int:
    refs = []
    for index in range(count):
        app = Celery(f"memory-worker-{index}", broker=url, set_as_current=False)
        app.conf.update(
            durable_redis_url=url,
            broker_connection_retry_on_startup=True,
            worker_hijack_root_logger=False,
        )
        ext = celery_durable.install(app) if install else None
        with start_worker(app, pool="solo", perform_ping_check=False):
            pass
        if ext is not None:
            ext.redis.close()
        app.close()
        refs.append(weakref.ref(app))
        del app, ext
    gc.collect()
    return sum(ref() is not None for ref in refs)


def test_apps_of_in_process_workers_are_freed_like_plain_ones(durable_redis_url):
    """The worker step's signal receivers do not outlive an in-process worker.

    Celery itself keeps the app of the last worker it ran (as the default
    app): the plain apps give the baseline.
    """
    plain = _alive_after_workers(3, durable_redis_url, install=False)
    installed = _alive_after_workers(3, durable_redis_url, install=True)
    assert installed == plain, f"{installed} installed apps alive vs {plain} plain ones"
