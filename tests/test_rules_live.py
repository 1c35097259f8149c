"""Rules that change while real workers run: no restart, every worker, pool children too.

Two `celery worker` processes (prefork, one child each) on their own queues
`w1` and `w2`; the test process changes the rules through the Python API of
its own client app, so nothing is shared with the workers but Redis. A task
failure is evaluated in the pool child that ran the task.

A probe sends a failing task to one worker and waits until the stored rule
`zz witness` (which fires on every failure, evaluated after the other rules
because stored rules go by name) has acted on it, then until the action
queue is empty: by then every rule that matched that failure has acted, so
"did rule X act on probe n" has a definite answer.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from celery import Celery

import celery_durable
from celery_durable import RulesError
from celery_durable.extension import DurableExtension, extension_for
from celery_durable.rules.store import RuleStore
from tests.apps import live_rules
from tests.waiting import wait_until
from tests.worker_processes import WorkerProcesses

pytestmark = pytest.mark.slow
WORKER_APP = "tests.apps.live_rules"  # for durable_worker_processes and client_app

# The promise is 2 s; a shared, loaded test machine gets some slack.
PROPAGATION_LIMIT = 5.0

WITNESS = {
    "name": "zz witness",
    "trigger": {"event": "task.failed"},
    "action": {"type": "remember", "key": "test:witness", "note": "{error_message}"},
    "circuit_breaker": {"max_executions": 100_000},  # it acts on every probe
}


def live_rule(note: str = "{error_message}") -> dict[str, Any]:
    return {
        "name": "live",
        "trigger": {"event": "task.failed", "conditions": {"task_name_pattern": "live.fail"}},
        "action": {"type": "remember", "key": "test:live", "note": note},
        "circuit_breaker": {"max_executions": 100_000},  # probes fire it often
    }


class Prober:
    def __init__(self, app: Celery):
        self.app = app
        self.ext: DurableExtension = extension_for(app)
        self.count = 0

    def remembered(self, key: str) -> list[str]:
        return [x.decode() for x in self.ext.redis.lrange(key, 0, -1)]

    def probe(self, queue: str, task: str = "live.fail") -> str:
        """Fail one task on `queue`; return its message once every rule has acted on it."""
        self.count += 1
        message = f"probe {self.count}"
        self.app.send_task(task, args=(self.count,), queue=queue)
        wait_until(
            lambda: message in self.remembered("test:witness"), what=f"the witness of {message}"
        )
        wait_until(
            lambda: self.ext.redis.xlen(self.ext.keys.actions()) == 0,
            what="the action queue drained",
        )
        return message

    def acts(self, queue: str, key: str, prefix: str = "", task: str = "live.fail") -> bool:
        """Does a rule pushing to `key` act on a new failure on `queue` (note `prefix`+message)?"""
        message = self.probe(queue, task)
        return f"{prefix}{message}" in self.remembered(key)

    def until(self, want: bool, queue: str, key: str, prefix: str = "", **kw: Any) -> float:
        """Probe until the answer is `want`; return how long that took (bounded)."""
        began = time.monotonic()
        while self.acts(queue, key, prefix, **kw) is not want:
            assert time.monotonic() - began < PROPAGATION_LIMIT, (
                f"{key} still {'silent' if want else 'acting'} on {queue} "
                f"after {PROPAGATION_LIMIT}s"
            )
        return time.monotonic() - began


def test_rules_change_in_running_workers_without_a_restart(
    client_app, durable_worker_processes: WorkerProcesses
):
    celery_durable.save_rules([WITNESS], app=client_app)
    # Each worker takes the probes of its own queue.
    started = [
        durable_worker_processes.start(1, name=q, extra_args=["-Q", q], wait=False)
        for q in ("w1", "w2")
    ]
    for worker in started:
        worker.wait_ready()
    prober = Prober(client_app)
    pids = {w.hostname: w.process.pid for w in durable_worker_processes.workers}
    for queue in ("w1", "w2"):
        assert not prober.acts(queue, "test:live")

    # Add: both workers run the new rule, within the limit.
    celery_durable.save_rules([live_rule()], app=client_app)
    for queue in ("w1", "w2"):
        assert prober.until(True, queue, "test:live") < PROPAGATION_LIMIT
        assert prober.acts(queue, "test:live")  # and keep running it

    # Edit: the new actions, never a mix.
    celery_durable.save_rules([live_rule("edited {error_message}")], app=client_app)
    for queue in ("w1", "w2"):
        prober.until(True, queue, "test:live", prefix="edited ")

    # A refused change changes nothing: the workers go on with the edited rule.
    broken = {**live_rule(), "action": {"type": "remember", "key": 5}}
    with pytest.raises(RulesError):
        celery_durable.save_rules([broken], app=client_app)
    for queue in ("w1", "w2"):
        assert prober.acts(queue, "test:live", prefix="edited ")

    # Disable, enable: a stored rule and a rule the configuration wrote disabled.
    celery_durable.set_rule_enabled("live", False, app=client_app)
    for queue in ("w1", "w2"):
        prober.until(False, queue, "test:live", prefix="edited ")
    celery_durable.set_rule_enabled("dormant", True, app=client_app)
    for queue in ("w1", "w2"):
        prober.until(True, queue, "test:dormant", task="live.dormant")
    celery_durable.set_rule_enabled("live", True, app=client_app)
    for queue in ("w1", "w2"):
        prober.until(True, queue, "test:live", prefix="edited ")

    # A stored rule a worker cannot load (saved by a process with a plugin these
    # workers lack): each worker reports it, and runs the others.
    ext = extension_for(client_app)
    teleport = {**live_rule(), "name": "teleport", "action": {"type": "teleport"}}
    RuleStore(ext.redis, ext.keys).write({"teleport": teleport})

    def reported() -> set[str]:
        (listed,) = [
            r for r in celery_durable.list_rules(app=client_app) if r["name"] == "teleport"
        ]
        return {p["worker"] for p in listed["problems"] if p["worker"]}

    wait_until(lambda: reported() == set(pids), what="both workers reporting the rule")
    for queue in ("w1", "w2"):
        assert prober.acts(queue, "test:live", prefix="edited ")

    # Delete: no worker runs it any more.
    celery_durable.delete_rule("live", app=client_app)
    for queue in ("w1", "w2"):
        prober.until(False, queue, "test:live", prefix="edited ")
        assert not prober.acts(queue, "test:live", prefix="edited ")

    # An action running while its rule is deleted finishes, and is recorded.
    gated = {
        "name": "gated",
        "trigger": {"event": "task.failed", "conditions": {"task_name_pattern": "live.gated"}},
        "action": {"type": "gate"},
    }
    marker = {**live_rule(), "name": "marker", "action": {**live_rule()["action"], "key": "m"}}
    celery_durable.save_rules([gated, marker], app=client_app)
    prober.until(True, "w1", "m")  # w1's one pool child has the version holding `gated`
    client_app.send_task("live.gated", args=(1,), queue="w1")
    wait_until(lambda: prober.remembered(live_rules.GATE_STARTED) == ["gated 1"])
    celery_durable.delete_rule("gated", app=client_app)
    ext.redis.rpush(live_rules.GATE_OPEN, "go")
    wait_until(lambda: prober.remembered(live_rules.GATE_DONE) == ["gated 1"])
    wait_until(lambda: ext.redis.xlen(ext.keys.rule_history("gated")))
    (entry,) = celery_durable.rule_history("gated", app=client_app)
    assert entry["outcome"] == "success"
    assert entry["actions"][0]["result"] == {"note": "gated 1"}

    # No restart happened.
    assert {w.hostname: w.process.pid for w in durable_worker_processes.workers} == pids
    assert all(w.process.poll() is None for w in durable_worker_processes.workers)
