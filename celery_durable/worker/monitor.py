"""The recovery of runs left behind: by dead workers, and by this worker's consumer.

A thread in every worker's main process, every `durable_heartbeat_interval`:

1. sends again the runs whose messages this worker's consumer dropped
   unacknowledged (at SIGTERM, or when its broker connection was lost),
   instead of leaving them to the broker's visibility timeout;
2. takes over the runs filed under this worker as running that nothing of it
   executes any more (Redis lost an execution's last writes);
3. looks for workers whose last beat is older than `durable_worker_timeout`.
   For each, one live worker wins a lock and recovers it: each run it had
   filed or whose message it held goes through `recovery.decide()` (taken
   over, sent again, or given back its timers), the dispatched steps it held
   are sent again (`step_task.recover_held`), its plain tasks are reported
   as `task.orphaned`, and it is reported as `worker.offline`.

Redis state confirms a loss (pub/sub heartbeats can be missed), recovery does
not wait for the broker's visibility timeout to redeliver anything, and no
worker is judged while this one's own heartbeat is not steady (see
`heartbeat.py`). The monitor ends when the heartbeat does.
"""

from __future__ import annotations

import logging
import time

from ..activity import TASK_ORPHANED, WORKER_OFFLINE
from ..background import Background
from ..extension import RUN_TASK_NAME, DurableExtension
from .heartbeat import Heartbeat
from .holdings import decode_record, run_ids, run_message
from .recovery import Action, Cause, owned_by, recover_run
from .step_task import STEP_TASK_NAME, recover_held
from .task_events import orphaned_data

logger = logging.getLogger("celery_durable.recovery")

RECOVERY_LOCK_SECONDS = 60


class WorkerMonitor(Background):
    wait_first = True  # nothing to look after the moment the worker starts

    def __init__(self, ext: DurableExtension, heartbeat: Heartbeat):
        super().__init__(f"worker {heartbeat.hostname}: recovery", ext.settings.heartbeat_interval)
        self.ext = ext
        self.heartbeat = heartbeat
        self.hostname = heartbeat.hostname
        self.timeout = ext.settings.worker_timeout
        self._unheld: set[str] = set()  # runs filed here that no request held, last look

    def run_once(self) -> None:
        if self.heartbeat.stopping.is_set():
            self.stopping.set()  # this worker signed off: it watches no more
            return
        self.resend_dropped()
        self.adopt_orphans()
        if self.heartbeat.steady():
            for dead in self.find_dead():
                self.recover(dead)

    def find_dead(self) -> list[str]:
        cutoff = time.time() - self.timeout
        dead = self.ext.redis.zrangebyscore(self.ext.keys.workers(), "-inf", cutoff)
        return [name.decode() for name in dead if name.decode() != self.hostname]

    def recover(self, dead: str) -> bool:
        """Recover `dead` unless another live worker is at it; True if we did."""
        keys, client = self.ext.keys, self.ext.redis
        lock = keys.recovery_lock(dead)
        if not client.set(lock, self.hostname, nx=True, ex=RECOVERY_LOCK_SECONDS):
            return False
        score = client.zscore(keys.workers(), dead)
        if score is None or score > time.time() - self.timeout:
            client.delete(lock)
            return False  # recovered meanwhile, or it came back
        held = [decode_record(raw) for raw in client.hvals(keys.worker_tasks(dead))]
        # Run messages it held, unclaimed: each with the dead owner it takes over, if any.
        held_runs = dict(found for record in held if (found := run_message(record)))
        tasks = [r for r in held if r.get("task_name") not in (RUN_TASK_NAME, STEP_TASK_NAME)]
        runs = sorted(
            {m.decode() for m in client.smembers(keys.worker_runs(dead))} | set(held_runs)
        )
        resumed = [
            run_id
            for run_id in runs
            if recover_run(
                self.ext,
                run_id,
                Cause.WORKER_DEAD,
                takeover=held_runs.get(run_id),
                owner_gone=lambda owner: owned_by(owner, dead),
            ).action
            is not Action.LEAVE
        ]
        steps = recover_held(self.ext, held, dead)  # dispatched steps: sent again, not orphaned
        for task in tasks:
            self.ext.emit(TASK_ORPHANED, orphaned_data(task, self.hostname))
        self.ext.emit(
            WORKER_OFFLINE,
            {
                "worker": dead,
                "last_heartbeat": score,
                "recovered_by": self.hostname,
                "runs": resumed,
                "steps": steps,
                "tasks": [t["task_id"] for t in tasks],
            },
        )
        pipe = client.pipeline(transaction=False)
        pipe.zrem(keys.workers(), dead)
        pipe.delete(keys.worker_runs(dead), keys.worker_tasks(dead), lock)
        pipe.execute()
        logger.warning(
            "worker %s is offline (no heartbeat for %.0fs): resumed %d run(s), "
            "sent %d step(s) again, reported %d orphaned task(s)",
            dead,
            time.time() - score,
            len(resumed),
            len(steps),
            len(tasks),
        )
        return True

    def resend_dropped(self) -> int:
        """Send again the runs whose messages this worker's consumer dropped unacknowledged."""
        resent = 0
        for request in self.heartbeat.holdings.dropped_runs():
            args, kwargs = request.args or (), request.kwargs or {}
            if not args:
                continue
            decision = recover_run(
                self.ext, str(args[0]), Cause.MESSAGE_DROPPED, takeover=kwargs.get("takeover")
            )
            if decision.action is not Action.LEAVE:
                logger.warning(
                    "run %s: its message was dropped unacknowledged (the broker connection "
                    "closed); sent it again",
                    args[0],
                )
                resent += 1
        return resent

    def adopt_orphans(self) -> int:
        """Send on the runs filed under this worker that no request of it executes.

        An execution that ended without the journal knowing (Redis lost its
        last writes and still says `running`) leaves such a run behind, and
        its worker, alive, is never recovered. A run must be seen so twice in
        a row (a claim or an end may be under way in between).
        """
        key = self.ext.keys.worker_runs(self.hostname)
        filed = {m.decode() for m in self.ext.redis.smembers(key)}
        unheld = filed - run_ids(self.heartbeat.holdings.current())
        confirmed, self._unheld = unheld & self._unheld, unheld
        adopted = 0
        for run_id in sorted(confirmed):
            decision = recover_run(
                self.ext,
                run_id,
                Cause.UNEXECUTED,
                owner_gone=lambda owner: owned_by(owner, self.hostname),
            )
            adopted += decision.action is not Action.LEAVE
            if decision.action is Action.TAKE_OVER:
                logger.warning(
                    "run %s is filed under this worker as running, but nothing here executes "
                    "it (Redis lost its last writes?); taking it over",
                    run_id,
                )
            else:  # not this worker's to finish (ended, suspended, sent anew): tidy up
                self.ext.redis.srem(key, run_id)
        return adopted


__all__ = ["WorkerMonitor"]
