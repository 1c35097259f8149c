"""Heartbeats, and the recovery of workers that stopped beating.

A thread in every worker's main process, every `durable_heartbeat_interval`:

1. beats: scores this worker in the live-workers sorted set and replaces its
   record of held plain tasks (also promptly after a message arrives, so a
   task received just before a crash is on record);
2. looks for workers whose last beat is older than `durable_worker_timeout`.
   For each, one live worker wins a lock and recovers it: runs it was
   executing are taken over (sent again with a message naming the dead
   owner), suspended runs it had not finished suspending get their timers,
   the dispatched steps it held are sent again (`step_task.recover_held`), its
   plain tasks are reported as `task.orphaned`, and it is reported as
   `worker.offline`.

Redis state confirms a loss (pub/sub heartbeats can be missed), and recovery
does not wait for the broker's visibility timeout to redeliver anything.

After Redis was away (a beat failed), every worker's last beat is old: the
monitor waits one `durable_worker_timeout` of beats before it judges others,
so that live workers get the time to beat again. It also sends again the
runs whose messages its worker's consumer dropped unacknowledged (see
`holdings.Holdings`), instead of leaving them to the visibility timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..activity import TASK_ORPHANED, WORKER_OFFLINE
from ..extension import RUN_TASK_NAME, DurableExtension
from ..journal.events import FINAL_STATUSES, RunStatus
from ..workflows.interruptions import trouble_log
from .holdings import Holdings, decode_record, run_ids, run_message, snapshot
from .step_task import STEP_TASK_NAME, recover_held
from .task_events import orphaned_data

logger = logging.getLogger("celery_durable.recovery")

RECOVERY_LOCK_SECONDS = 60
SNAPSHOT_DEBOUNCE = 0.05
DRAIN_CHECK = 0.05


class WorkerMonitor:
    def __init__(self, ext: DurableExtension, hostname: str):
        self.ext = ext
        self.hostname = hostname
        self.interval = ext.settings.heartbeat_interval
        self.timeout = ext.settings.worker_timeout
        self._stopping = threading.Event()
        self._touched = threading.Event()
        self._draining = False
        self._thread: threading.Thread | None = None
        transport = ext.app.conf.broker_transport_options or {}
        self.holdings = Holdings(keep_for=float(transport.get("visibility_timeout", 3600)))
        # No judging other workers before this (monotonic) time: see the module's doc.
        self._judge_after = 0.0
        self._in_trouble = False
        self._unheld: set[str] = set()  # runs filed here that no request held, last look

    def start(self) -> None:
        self.beat()  # on record before the first task arrives
        self._thread = threading.Thread(
            target=self._loop, name="celery_durable-monitor", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """The worker has stopped cleanly: sign off now."""
        self._stopping.set()
        self._touched.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._sign_off()

    def stop_when_idle(self) -> None:
        """The worker is shutting down: go on beating until it holds nothing.

        A worker killed while it drains (a grace period that ran out) then
        still looks dead and is recovered; one that drained signs off.
        """
        self._draining = True
        self._touched.set()

    def _idle(self) -> bool:
        if self.holdings.current():
            return False
        return not self.ext.redis.scard(self.ext.keys.worker_runs(self.hostname))

    def _sign_off(self) -> None:
        try:  # a clean stop is not a death: nothing to recover
            pipe = self.ext.redis.pipeline(transaction=False)
            pipe.zrem(self.ext.keys.workers(), self.hostname)
            pipe.delete(self.ext.keys.worker_tasks(self.hostname))
            pipe.execute()
        except Exception as exc:
            logger.warning("could not sign off worker %s: %r", self.hostname, exc)

    def touch(self, request: Any = None) -> None:
        """A message arrived: write the record of held tasks soon."""
        if request is not None:
            self.holdings.received(request)
        self._touched.set()

    # -- one round ------------------------------------------------------------------

    def beat(self) -> None:
        keys = self.ext.keys
        held = snapshot(self.hostname, self.holdings.current())
        # Not a transaction (the keys live in different cluster slots): only a
        # dead worker's record is ever read, and a dead worker does not write.
        pipe = self.ext.redis.pipeline(transaction=False)
        pipe.zadd(keys.workers(), {self.hostname: time.time()})
        pipe.delete(keys.worker_tasks(self.hostname))
        if held:
            pipe.hset(keys.worker_tasks(self.hostname), mapping=held)
        pipe.execute()

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
        resumed = [run_id for run_id in runs if self._resume(run_id, dead, held_runs.get(run_id))]
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
        for request in self.holdings.dropped_runs():
            args, kwargs = request.args or (), request.kwargs or {}
            if args and self._resume(str(args[0]), None, kwargs.get("takeover") or None):
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
        filed = {
            m.decode() for m in self.ext.redis.smembers(self.ext.keys.worker_runs(self.hostname))
        }
        unheld = filed - run_ids(self.holdings.current())
        confirmed, self._unheld = unheld & self._unheld, unheld
        adopted = 0
        for run_id in sorted(confirmed):
            meta = self.ext.journal.meta(run_id)
            status, owner = meta.get("status"), meta.get("owner", "")
            if status == RunStatus.RUNNING and owner.startswith(f"{self.hostname}/"):
                logger.warning(
                    "run %s is filed under this worker as running, but nothing here executes "
                    "it (Redis lost its last writes?); taking it over",
                    run_id,
                )
                self.ext.dispatch(run_id, takeover=owner)
                adopted += 1
                continue
            if status == RunStatus.PENDING:  # its claim was lost: it has to start anew
                self.ext.dispatch(run_id)
                adopted += 1
            # Not this worker's to finish (ended, suspended, taken over): tidy up.
            self.ext.redis.srem(self.ext.keys.worker_runs(self.hostname), run_id)
        return adopted

    def _resume(self, run_id: str, dead: str | None, takeover: str | None = None) -> bool:
        meta = self.ext.journal.meta(run_id)
        status, owner = meta.get("status"), meta.get("owner", "")
        if not meta or status in FINAL_STATUSES:
            return False
        if status == RunStatus.RUNNING:
            # Its execution died here, or a takeover it held (unclaimed) died with it.
            died_here = dead is not None and owner.startswith(f"{dead}/")
            if not (died_here or (takeover and owner == takeover)):
                return False  # taken over already
            self.ext.dispatch(run_id, takeover=owner)
        elif status == RunStatus.PENDING:
            self.ext.dispatch(run_id)  # its message died with the worker, unclaimed
        else:
            # Suspended, but the worker may have died before it set the timers.
            self.ext.timers.schedule(
                run_id,
                wake_at=float(meta["wake_at"]) if meta.get("wake_at") else None,
                deadline_at=float(meta["deadline_at"]) if meta.get("deadline_at") else None,
            )
        return True

    def _loop(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self._stopping.is_set():
            wait = max(0.0, next_beat - time.monotonic())
            if self._draining:
                wait = min(wait, DRAIN_CHECK)
            touched = self._touched.wait(wait)
            if self._stopping.is_set():
                return
            try:
                if self._draining and self._idle():
                    self._stopping.set()
                    self._sign_off()
                    return
                if touched:
                    self._touched.clear()
                    self._stopping.wait(SNAPSHOT_DEBOUNCE)  # let a burst of messages land
                self.beat()
                if self._in_trouble:  # Redis is back: give every worker time to beat
                    self._in_trouble = False
                    self._judge_after = time.monotonic() + self.timeout
                    logger.warning(
                        "worker %s: Redis answers again; judging other workers in %.0fs",
                        self.hostname,
                        self.timeout,
                    )
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.interval
                    self.resend_dropped()
                    self.adopt_orphans()
                    if time.monotonic() >= self._judge_after:
                        for dead in self.find_dead():
                            self.recover(dead)
            except Exception as exc:  # Redis away: try again next round
                self._in_trouble = True
                trouble_log.report(exc, f"worker {self.hostname}: heartbeat or recovery")


__all__ = ["WorkerMonitor"]
