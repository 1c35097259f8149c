"""The durable_* fixtures next to celery.contrib.pytest's and pytest-celery's."""

from __future__ import annotations

from celery import Celery

import celery_durable
from celery_durable.extension import RUN_TASK_NAME, installed
from tests.steps import arithmetic


def test_celery_contrib_pytest_and_durable_fixtures_in_one_test(
    celery_app, celery_config, durable_app, durable_worker
):
    """celery.contrib.pytest's `celery_app` and ours are separate apps."""
    assert isinstance(celery_app, Celery) and celery_app is not durable_app
    assert installed(celery_app) is None  # our fixtures touch no other app
    assert installed(durable_app) is not None
    assert RUN_TASK_NAME not in celery_app.tasks
    durable_app.set_current()
    assert celery_durable.start(arithmetic, 2, 2).result(timeout=15)["total"] == 4


def test_pytest_celery_is_loaded_too(request, celery_setup_name, durable_redis_url):
    """pytest-celery 1.x (its own `celery_worker`, Docker-based) loads beside ours."""
    plugins = request.config.pluginmanager
    assert plugins.get_plugin("celery").__name__ == "pytest_celery.plugin"
    assert plugins.get_plugin("celery_durable").__name__ == "celery_durable.contrib.pytest"
    assert isinstance(celery_setup_name, str)  # a pytest-celery fixture, no Docker needed
    assert durable_redis_url.startswith("redis://")
