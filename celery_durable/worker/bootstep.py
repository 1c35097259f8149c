"""The worker bootstep: celery_durable's presence in every worker process."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from ..extension import extension_for
from ..workflows.registry import registered
from .poller import TimerPoller

logger = logging.getLogger("celery_durable.worker")


class DurableWorkerStep(bootsteps.StartStopStep):
    """Check that Redis answers, announce the extension, run the timer poller."""

    label = "celery_durable"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any):
        super().__init__(worker, **kwargs)
        self.extension = extension_for(worker.app)
        settings = self.extension.settings  # a bad setting stops the worker here
        self.poller = TimerPoller(self.extension, settings.timer_poll_interval)

    def start(self, worker: Any) -> None:
        ext = self.extension
        ext.redis.ping()
        logger.info(
            "celery_durable active: journal at %s (key prefix %r), %d workflow(s) registered",
            ext.safe_redis_url,
            ext.settings.key_prefix,
            len(registered()),
        )
        self.poller.start()

    def stop(self, worker: Any) -> None:
        self.poller.stop()

    def shutdown(self, worker: Any) -> None:
        self.poller.stop()
