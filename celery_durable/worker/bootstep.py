"""The worker bootstep: celery_durable's presence in every worker process."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from celery.platforms import EX_FAILURE
from celery.signals import task_failure, task_received, worker_shutdown

from ..background import stop_together
from ..errors import JournalConflictError, RedisAccessError
from ..extension import RUN_TASK_NAME, extension_for
from ..schedules.registration import register_workflow_schedules
from ..workflows.blocking import retry_blocked_runs
from ..workflows.interruptions import backoff, is_interruption, trouble_log
from ..workflows.registry import registered
from .heartbeat import Heartbeat
from .monitor import WorkerMonitor
from .poller import TimerPoller
from .recovery import Action, owned_by, pool_cause, process_gone, recover_run
from .rules import ActionRunner, activate_rules
from .step_task import STEP_TASK_NAME, on_task_lost

logger = logging.getLogger("celery_durable.worker")

# A warm shutdown waits at most this long for the rounds of the worker's
# threads: the poller and the action runner when it begins, the heartbeat
# and the monitor once the pool has drained. Each group is stopped together,
# so the waits do not add up (25 s when each thread had its own).
ACTIONS_STOP_SECONDS = 10.0
SIGN_OFF_SECONDS = 5.0


class DurableWorkerStep(bootsteps.StartStopStep):
    """Check Redis, announce the extension, run the poller, the heartbeat and the monitor."""

    label = "celery_durable"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any):
        super().__init__(worker, **kwargs)
        self.extension = extension_for(worker.app)
        settings = self.extension.settings  # a bad setting stops the worker here
        # So do bad rules: loaded before the pool forks, inherited by its children.
        activate_rules(self.extension)
        self.poller = TimerPoller(self.extension, settings.timer_poll_interval)
        self.actions: ActionRunner | None = None
        self.heartbeat: Heartbeat | None = None
        self.monitor: WorkerMonitor | None = None
        self.hostname = ""
        self.worker: Any = None

    def start(self, worker: Any) -> None:
        ext = self.extension
        self._check_redis()
        register_workflow_schedules(ext)  # @workflow(schedule=...), before the poller fires
        self.hostname = worker.hostname
        self.worker = worker
        self.heartbeat = Heartbeat(ext, worker.hostname)
        self.heartbeat.start()
        self.monitor = WorkerMonitor(ext, self.heartbeat)
        self.monitor.start()
        self.poller.start()
        self.actions = ActionRunner(ext, worker.hostname)
        self.actions.start()
        self._retry_blocked()
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
        # heartbeat goes on until the worker holds nothing, so that a worker
        # killed during its warm shutdown is still recovered; the monitor
        # goes on with it (it sends again the runs the consumer dropped).
        # An action under way (a webhook) has ACTIONS_STOP_SECONDS to finish;
        # one cut short stays queued for another worker.
        stop_together([self.poller, self.actions], ACTIONS_STOP_SECONDS)
        if self.heartbeat is not None:
            self.heartbeat.stop_when_idle()

    terminate = shutdown = stop

    def _retry_blocked(self) -> None:
        """This worker may have the code blocked runs wait for: send each once."""
        try:
            sent = retry_blocked_runs(self.extension)
        except Exception as exc:  # their retry timers try them anyway
            logger.warning("could not send the blocked runs again: %r", exc)
            return
        if sent:
            logger.info("sent %d blocked run(s) again: this worker may replay them", sent)

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
        stop_together([self.heartbeat, self.monitor], SIGN_OFF_SECONDS)  # the heartbeat signs off
        self.heartbeat = None
        self.monitor = None

    def _on_received(self, sender: Any = None, request: Any = None, **kwargs: Any) -> None:
        if self.heartbeat is not None and getattr(sender, "app", None) is self.extension.app:
            self.heartbeat.touch(request)

    def _on_failure(
        self,
        sender: Any = None,
        exception: BaseException | None = None,
        args: Any = None,
        **kwargs: Any,
    ) -> None:
        """A pool process died under a run, or its task hit the hard time limit: recover it.

        Fires in the main process (the child is gone) with the request's args;
        what to do is `recovery.decide()`'s answer, from here at once.
        A dispatched step's task is sent again (see `step_task.on_task_lost`).
        """
        if getattr(sender, "name", None) == STEP_TASK_NAME and sender.app is self.extension.app:
            if pool_cause(exception) is not None:
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
        cause = pool_cause(exception)
        if cause is None or not args:
            return
        run_id, hostname = str(args[0]), self.hostname
        try:
            decision = recover_run(
                self.extension,
                run_id,
                cause,
                takeover=(kwargs.get("kwargs") or {}).get("takeover"),
                owner_gone=lambda owner: owned_by(owner, hostname) and process_gone(owner),
                error=exception,
                worker=hostname,
            )
        except JournalConflictError:
            return  # it moved on: someone else has it
        except Exception as exc:
            logger.error("could not recover run %s after %r: %r", run_id, exception, exc)
            return
        if decision.action is Action.TAKE_OVER:
            logger.warning("run %s lost its pool process (%s); taking it over", run_id, exception)
