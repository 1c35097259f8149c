"""Fault tests: real `celery worker` processes and redis-servers, broken on purpose.

Workers run `tests.apps.faulty` (quick detection: heartbeat 0.5 s, worker
timeout 3 s, redispatch after 1 s). Helpers shared by the test modules live
here; the fixtures are in `conftest.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from celery_durable import RunHandle
from celery_durable.codec import unpackb
from celery_durable.extension import DurableExtension
from tests.waiting import wait_until as wait_until  # the suite imports it from here


def global_events(ext: DurableExtension) -> list[dict[str, Any]]:
    """The global event stream (`durable:events`), oldest first."""
    return [unpackb(fields[b"e"]) for _, fields in ext.redis.xrange(ext.keys.events())]


def executions(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "workflow.executing"]


def results(runs: list[RunHandle], timeout: float) -> list[Any]:
    """Every run's result, all within one deadline."""
    deadline = time.monotonic() + timeout
    return [run.result(timeout=max(0.1, deadline - time.monotonic())) for run in runs]


def statuses(ext: DurableExtension, runs: list[RunHandle]) -> dict[str, int]:
    pipe = ext.redis.pipeline(transaction=False)
    for run in runs:
        pipe.hget(ext.keys.run_meta(run.id), "status")
    counted: dict[str, int] = {}
    for value in pipe.execute():
        status = value.decode() if value is not None else "missing"
        counted[status] = counted.get(status, 0) + 1
    return counted


def check_steps_once(
    events: list[dict[str, Any]], counts: list[int], *, may_repeat_after: int | None
) -> int | None:
    """Check a finished run's step counters against its journal; the repeated position.

    Every step ran once, except that the one interrupted by a fault (the first
    step recorded after the `workflow.executing` at seq `may_repeat_after`)
    may have run twice. A step whose `step.completed` came before that
    execution must have run exactly once. Returns the position that ran
    twice, if one did.
    """
    completed = [e for e in events if e["type"] == "step.completed"]
    positions = [e["data"]["position"] for e in completed]
    assert positions == list(range(len(counts))), positions
    repeated = [p for p, n in enumerate(counts) if n != 1]
    if may_repeat_after is None or not repeated:
        assert repeated == [], f"steps ran more than once: {counts}"
        return None
    resumed = next((e for e in completed if e["seq"] > may_repeat_after), None)
    assert resumed is not None, f"counts {counts}, but no step completed after the fault"
    interrupted = resumed["data"]["position"]
    assert repeated == [interrupted], (
        f"counts {counts}: only position {interrupted}, the step running when the fault "
        f"struck, may have run twice"
    )
    assert counts[interrupted] == 2, counts
    return interrupted
