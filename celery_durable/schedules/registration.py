"""`@workflow(schedule=...)` made real: a starting worker stores its code's schedules.

Every worker does it when it starts, so it is idempotent: a schedule whose
definition did not change keeps its state and next tick (a restart neither
repeats nor skips a tick); a changed cron, interval or timezone replaces the
definition and starts from the next tick after now. The schedule is named
like the workflow. A runtime schedule (`schedule()`) of the same name owns
it and is left alone. A workflow whose code no longer has `schedule=` loses
its stored decorator schedule. During a rolling deploy the last worker to
start wins, as it would with a changed cron.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..workflows.registry import lookup, registered
from .model import DECORATOR, ScheduleSpec
from .store import schedule_store
from .timing import to_ms

if TYPE_CHECKING:
    from ..extension import DurableExtension

logger = logging.getLogger("celery_durable.schedules")


def register_workflow_schedules(ext: DurableExtension) -> int:
    """Store the schedules of the workflows registered here; how many this code defines."""
    store = schedule_store(ext)
    now = ext.clock.now()
    defined, unscheduled = 0, []
    for name in registered():
        timing = lookup(name).schedule
        if timing is None:
            unscheduled.append(name)
            continue
        defined += 1
        spec = ScheduleSpec(name=name, workflow=name, timing=timing, source=DECORATOR)
        saved = store.save(spec, timing.next_after(to_ms(now)), now)
        if saved.outcome == "taken":
            logger.warning(
                "workflow %r has schedule=, but a schedule made by schedule() holds the name "
                "%r; that one stays (delete_schedule(%r) to use the decorator's)",
                name,
                name,
                name,
            )
        elif saved.outcome != "unchanged":
            logger.info("schedule %r %s: %s", name, saved.outcome, timing.describe())
    _forget_removed(ext, unscheduled)
    store.ensure_timers()
    return defined


def _forget_removed(ext: DurableExtension, names: list[str]) -> None:
    """Delete decorator schedules of workflows this code defines without `schedule=`."""
    if not names:
        return
    pipe = ext.redis.pipeline(transaction=False)
    for name in names:
        pipe.hget(ext.keys.schedule(name), "source")
    for name, source in zip(names, pipe.execute(), strict=True):
        if source == DECORATOR.encode():
            schedule_store(ext).delete(name)
            logger.info("schedule %r deleted: workflow %r no longer has schedule=", name, name)
