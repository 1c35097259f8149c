"""Settings: unknown `durable_*` keys are named, with the closest known key."""

from __future__ import annotations

import dataclasses
import logging

from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable.settings import Settings, known_settings, unknown_settings


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "celery_durable" and r.levelno == logging.WARNING
    ]


def test_known_settings_are_the_settings_fields():
    """A field added to `Settings` is a known key without being listed anywhere else."""
    names = {"durable_" + f.name for f in dataclasses.fields(Settings)}
    assert names <= known_settings()
    assert {"durable_redis_url", "durable_key_prefix", "durable_rules"} <= known_settings()


def test_a_typo_is_named_with_the_closest_known_key(caplog):
    app = Celery("typos", set_as_current=False)
    app.conf.update(
        durable_heartbeat_intervall=1.0,
        durable_key_prefx="shop",
        durable_zzzzzz=True,
        durable_key_prefix="shop",  # known: no warning
    )
    with caplog.at_level(logging.WARNING, logger="celery_durable"):
        Settings.from_app(app)
    assert _warnings(caplog) == [
        "durable_heartbeat_intervall: unknown setting, ignored; "
        "did you mean durable_heartbeat_interval?",
        "durable_key_prefx: unknown setting, ignored; did you mean durable_key_prefix?",
        "durable_zzzzzz: unknown setting, ignored; see the settings table in the README",
    ]


def test_known_settings_give_no_warning():
    app = Celery("fine", set_as_current=False)
    app.conf.update(durable_redis_url="redis://x:1/0", durable_queue="q", task_default_queue="q")
    assert unknown_settings(app.conf) == []


def test_a_worker_warns_at_start(durable_redis_url, caplog):
    app = Celery("typo-worker", broker=durable_redis_url, set_as_current=False)
    app.conf.update(
        durable_redis_url=durable_redis_url,
        durable_worker_timout=30,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    celery_durable.install(app)
    with (
        caplog.at_level(logging.WARNING, logger="celery_durable"),
        start_worker(app, pool="solo", perform_ping_check=False),
    ):
        pass
    assert _warnings(caplog) == [
        "durable_worker_timout: unknown setting, ignored; did you mean durable_worker_timeout?"
    ]
