"""install(app): idempotent, per app, settings with defaults, the worker bootstep."""

from __future__ import annotations

import logging

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable.errors import ConfigurationError
from celery_durable.extension import RUN_TASK_NAME
from celery_durable.settings import DEFAULT_REDIS_URL, Settings
from celery_durable.worker.bootstep import DurableWorkerStep


def test_install_is_idempotent():
    app = Celery("shop", broker="redis://localhost:6379/3", set_as_current=False)
    first = celery_durable.install(app)
    assert celery_durable.install(app) is first
    assert [s for s in app.steps["worker"] if s is DurableWorkerStep] == [DurableWorkerStep]
    app.finalize()
    assert RUN_TASK_NAME in app.tasks


def test_install_touches_no_other_app():
    mine = Celery("mine", broker="redis://localhost:6379/3", set_as_current=False)
    other = Celery("other", broker="redis://localhost:6379/3", set_as_current=False)
    celery_durable.install(mine)
    other.finalize()
    assert RUN_TASK_NAME not in other.tasks
    assert DurableWorkerStep not in other.steps["worker"]


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ({"broker_url": "redis://broker:6380/2"}, "redis://broker:6380/2"),
        ({"broker_url": "amqp://guest@localhost//"}, DEFAULT_REDIS_URL),
        ({"broker_url": "amqp://x//", "durable_redis_url": "redis://j:1/4"}, "redis://j:1/4"),
    ],
)
def test_journal_url_defaults_to_a_redis_broker(conf, expected):
    app = Celery("s", set_as_current=False)
    app.conf.update(conf)
    assert Settings.from_app(app).redis_url == expected


def test_settings_defaults():
    settings = Settings.from_app(Celery("s", set_as_current=False))
    assert (settings.key_prefix, settings.rules, settings.plugins, settings.queue) == (
        "durable",
        None,
        (),
        None,
    )


def test_worker_logs_that_the_extension_is_active(durable_app, caplog):
    with (
        caplog.at_level(logging.INFO, logger="celery_durable"),
        start_worker(durable_app, pool="solo", perform_ping_check=False),
    ):
        pass
    lines = [r.getMessage() for r in caplog.records if r.name == "celery_durable.worker"]
    assert any(
        line.startswith("celery_durable active: journal at redis://127.0.0.1:")
        and "key prefix 'durable'" in line
        for line in lines
    ), lines


def test_worker_refuses_to_start_with_a_bad_setting(durable_redis_url):
    app = Celery("bad", broker=durable_redis_url, set_as_current=False)
    app.conf.durable_key_prefix = "my {prefix}"
    celery_durable.install(app)
    with (
        pytest.raises(ConfigurationError, match="durable_key_prefix"),
        start_worker(app, pool="solo", perform_ping_check=False),
    ):
        pass


def test_workflow_runs_on_a_configured_queue(durable_redis_url):
    """`durable_queue` routes the run tasks; a worker on that queue executes them."""
    from tests.steps import arithmetic

    app = Celery("queued", broker=durable_redis_url, set_as_current=True)
    app.conf.update(durable_redis_url=durable_redis_url, durable_queue="workflows")
    celery_durable.install(app)
    with start_worker(app, pool="solo", perform_ping_check=False, queues=["workflows"]):
        assert celery_durable.start(arithmetic, 3, 4).result(timeout=15)["total"] == 7
