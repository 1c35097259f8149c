"""pytest plugin: install celery_durable on the apps of Celery's integration suite.

Celery's `t/integration/conftest.py` builds its apps with the fixtures of
`celery.contrib.pytest`: `celery_session_app` (the session worker's app) and
`celery_app` (a client app per test). This plugin, loaded with
`-p durable_integration_plugin`, calls `celery_durable.install()` on each as
soon as the fixture made it, so the worker starts with the extension's
bootsteps and every client sends through an installed app. With
`DURABLE_INTEGRATION_INSTALL=0` it installs nothing (the baseline run).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import celery_durable
from celery_durable.worker.bootstep import DurableWorkerStep

APP_FIXTURES = ("celery_session_app", "celery_app")
ENABLED = os.environ.get("DURABLE_INTEGRATION_INSTALL", "1") != "0"

_installed = 0
_worker_steps: list[bool] = []


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: Any) -> Any:
    value = yield
    global _installed
    if ENABLED and fixturedef.argname in APP_FIXTURES:
        celery_durable.install(value)
        _installed += 1
    if fixturedef.argname == "celery_session_worker" and value is not None:
        # The proof that the worker runs with the extension, not only the apps.
        _worker_steps.append(any(isinstance(s, DurableWorkerStep) for s in value.steps))
    return value


def pytest_report_header(config: Any) -> str:
    state = "installed on" if ENABLED else "NOT installed on (baseline)"
    return f"celery_durable: {state} celery_session_app and celery_app"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"celery_durable installed on {_installed} app(s); session worker(s) running its "
        f"bootstep: {sum(_worker_steps)} of {len(_worker_steps)}"
    )
