"""The worker bootstep: celery_durable's presence in every worker process."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import bootsteps
from celery.exceptions import TimeLimitExceeded
from celery.platforms import EX_FAILURE
from celery.signals import task_failure, task_received, worker_shutdown

from ..errors import JournalConflictError, RedisAccessError
from ..extension import RUN_TASK_NAME, extension_for
from ..journal.events import EventType, RunStatus
from ..rules.action_queue import ActionRunner
from ..rules.polling import TriggerPolling
from ..workflows.interruptions import backoff, is_interruption, trouble_log
from ..workflows.outcomes import finish
from ..workflows.registry import registered
from .monitor import WorkerMonitor
from .poller import TimerPoller
from .step_task import STEP_TASK_NAME, on_task_lost
from .task_events import ExecutionTimeWatch

logger = logging.getLogger("celery_durable.worker")


class DurableWorkerStep(bootsteps.StartStopStep):
    """Check Redis, announce the extension, run the timer poller and the monitor."""

    label = "celery_durable"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any):
        super().__init__(worker, **kwargs)
        self.extension = extension_for(worker.app)
        settings = self.extension.settings  # a bad setting stops the worker here
        # So do bad rules: loaded before the pool forks, inherited by its children.
        self.extension.activate_rules()
        self.poller = TimerPoller(self.extension, settings.timer_poll_interval)
        self.actions: ActionRunner | None = None
        self.monitor: WorkerMonitor | None = None
        self.hostname = ""
        self.worker: Any = None

    def start(self, worker: Any) -> None:
        ext = self.extension
        self._check_redis()
        self.hostname = worker.hostname
        self.worker = worker
        self.monitor = WorkerMonitor(ext, worker.hostname)
        self.monitor.start()
        self.poller.start()
        self.actions = ActionRunner(ext, worker.hostname, tick=RulesTick(ext, worker.hostname))
        self.actions.start()
        # Weakly: the worker holds this step; an in-process worker that is
        # dropped (tests) then frees its app instead of leaking it.
        task_received.connect(self._on_received, weak=True)
        task_failure.connect(self._on_failure, weak=True)
        worker_shutdown.connect(self._on_worker_shutdown, weak=True)
        logger.info(
            "celery_durable active: journal at %s (key prefix %r), %d workflow(s) registered",
            ext.safe_redis_url,
            ext.settings.key_prefix,
            len(registered()),
        )

    def stop(self, worker: Any) -> None:
        # This step stops before the pool drains (it requires the pool). The
        # monitor keeps beating until the worker holds nothing, so that a
        # worker killed during its warm shutdown is still recovered.
        self.poller.stop()
        if self.actions is not None:
            self.actions.stop()  # a job cut short stays queued for another worker
        if self.monitor is not None:
            self.monitor.stop_when_idle()

    terminate = shutdown = stop

    def _check_redis(self) -> None:
        """Wait for the journal's Redis; refuse to start, in one line, if it refuses us.

        A wrong password, missing permissions, a TLS certificate that does not
        verify: no retry helps, so the worker stops at once, saying what to
        change. Redis away or loading: wait for it (SIGTERM still stops the
        worker), saying so once per interval.
        """
        attempt = 0
        while True:
            try:
                self.extension.redis.ping()
                return
            except RedisAccessError as exc:
                logger.critical("celery_durable cannot start: %s", exc)
                raise SystemExit(EX_FAILURE) from None
            except Exception as exc:
                if not is_interruption(exc):
                    raise
                trouble_log.report(
                    exc, f"celery_durable: waiting for {self.extension.safe_redis_url}"
                )
            time.sleep(backoff(attempt))
            attempt += 1

    def _on_worker_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        """A warm stop is complete, the pool drained: sign off, nothing to recover."""
        if sender is not self.worker:
            return
        task_received.disconnect(self._on_received)
        task_failure.disconnect(self._on_failure)
        worker_shutdown.disconnect(self._on_worker_shutdown)
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None

    def _on_received(self, sender: Any = None, request: Any = None, **kwargs: Any) -> None:
        if self.monitor is not None and getattr(sender, "app", None) is self.extension.app:
            self.monitor.touch(request)

    def _on_failure(
        self,
        sender: Any = None,
        exception: BaseException | None = None,
        args: Any = None,
        **kwargs: Any,
    ) -> None:
        """A pool child died under a run: take it over at once, from this process.

        Fires in the main process (the child is gone) with the request's args.
        A dispatched step's task is sent again (see `step_task.on_task_lost`).
        """
        if getattr(sender, "name", None) == STEP_TASK_NAME and sender.app is self.extension.app:
            if isinstance(exception, WorkerLostError | TimeLimitExceeded):
                task_id = kwargs.get("task_id") or ""
                try:
                    on_task_lost(self.extension, self.hostname, task_id, args, exception)
                except Exception as exc:
                    logger.error(
                        "could not recover step task %s after %r: %r", task_id, exception, exc
                    )
            return
        if getattr(sender, "name", None) != RUN_TASK_NAME or sender.app is not self.extension.app:
            return
        if not isinstance(exception, WorkerLostError | TimeLimitExceeded) or not args:
            return
        run_id = args[0]
        ext = self.extension
        try:
            meta = ext.journal.meta(run_id)
            owner, status = meta.get("owner", ""), meta.get("status")
            if status == RunStatus.PENDING or (
                status in (RunStatus.SLEEPING, RunStatus.WAITING)
                and isinstance(exception, WorkerLostError)
            ):
                # It died before its claim (the message that woke the run is
                # gone): send the run again; a resend is harmless.
                ext.dispatch(run_id)
                return
            takeover = (kwargs.get("kwargs") or {}).get("takeover")
            if (
                status == RunStatus.RUNNING
                and takeover
                and owner == takeover
                and isinstance(exception, WorkerLostError)
            ):
                # It died before it claimed a takeover: the dead owner is still on record.
                ext.dispatch(run_id, takeover=takeover)
                return
            if status != RunStatus.RUNNING or not owner.startswith(f"{self.hostname}/"):
                return
            if _alive(int(owner.rsplit("/", 1)[1])):
                return
            if isinstance(exception, TimeLimitExceeded):
                # Running it again would hit the same limit: the run fails.
                finish(
                    ext,
                    run_id,
                    int(meta["seq"]),
                    EventType.WORKFLOW_FAILED,
                    error=exception,
                    parent=meta.get("parent"),
                    workflow_name=meta.get("name", ""),
                    worker=self.hostname,
                )
            else:
                logger.warning(
                    "run %s lost its pool process (%s); taking it over", run_id, exception
                )
                ext.dispatch(run_id, takeover=owner)
        except JournalConflictError:
            pass  # it moved on: someone else has it
        except Exception as exc:
            logger.error("could not recover run %s after %r: %r", run_id, exception, exc)


class RulesTick:
    """The rules' periodic chores, done from the action runner's thread."""

    def __init__(self, ext: Any, hostname: str):
        self.watch = ExecutionTimeWatch(ext, hostname)
        self.polling = TriggerPolling(ext)

    def __call__(self) -> None:
        self.watch.check()
        self.polling.check()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
