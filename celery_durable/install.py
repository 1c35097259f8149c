"""`install(app)`: the one line that turns a Celery app durable."""

from __future__ import annotations

from celery import Celery

from .extension import DurableExtension, installed, register
from .plugins import EventHook
from .worker.bootstep import DurableWorkerStep
from .worker.journal_queue import JournalQueueStep
from .worker.run_task import register_run_task
from .worker.step_task import register_step_task
from .worker.task_events import connect_task_events


def install(app: Celery) -> DurableExtension:
    """Enable celery_durable on `app` (and only on it); calling it again is a no-op.

    Adds the worker bootsteps through `app.steps` (the extension's presence,
    and the consumption of this journal's own queue), registers the internal tasks
    that execute runs and dispatched steps, shows every activity to the
    plugins' `durable_event` hook, and reports the failures of this app's
    tasks to its rules (in workers). The `durable_*` settings are read on first use (a
    worker reads them before it starts and refuses to start on a bad one), so
    the app may be configured before or after this call.
    """
    existing = installed(app)
    if existing is not None:
        return existing
    extension = DurableExtension(app)
    register(app, extension)
    extension.listen(EventHook(extension))
    app.steps["worker"].add(DurableWorkerStep)
    app.steps["consumer"].add(JournalQueueStep)
    register_run_task(app)
    register_step_task(app)
    connect_task_events(app)
    return extension
