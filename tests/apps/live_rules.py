"""An app for `tests/test_rules_live.py`: workers whose rules change while they run.

Its tasks fail on purpose (`live.fail`, `live.dormant`: `ValueError("probe <n>")`);
the rules' `remember` action (from `tests.plugin_for_tests`) pushes the
rendered note to a Redis list, which the test reads; this module is a
plugin too, whose `gate` action waits until the test lets it finish. `dormant` is a rule of
the configuration written `enabled: false`.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from celery_durable import Action, hookimpl

from . import NOWHERE_URL, REDIS_URL_ENV, make_worker_app

GATE_STARTED, GATE_OPEN, GATE_DONE = "test:gate:started", "test:gate:open", "test:gate:done"


class Gate(Action):
    """An action that waits for the test: it records its start, waits for a token
    on `GATE_OPEN` (20 s at most), then records its end."""

    name = "gate"
    template_fields = ("note",)

    def __init__(self, note: str = "{error_message}"):
        self.note = note

    def run(self, event: Any, context: Any) -> Any:
        note = context.render(self.note, event)
        context.redis.rpush(GATE_STARTED, note)
        if context.redis.blpop([GATE_OPEN], timeout=20) is None:
            raise TimeoutError("the test never opened the gate")
        context.redis.rpush(GATE_DONE, note)
        return {"note": note}


@hookimpl
def durable_actions() -> list[type[Action]]:
    return [Gate]


CONFIG_RULES = [
    {
        "name": "dormant",
        "enabled": False,
        "trigger": {"event": "task.failed", "conditions": {"task_name_pattern": "live.dormant"}},
        "action": {"type": "remember", "key": "test:dormant", "note": "{error_message}"},
    }
]


def make_app(redis_url: str, main: str = "tests.apps.live_rules") -> Celery:
    return make_worker_app(
        main,
        redis_url,
        durable_plugins=["tests.plugin_for_tests", "tests.apps.live_rules"],
        durable_rules=CONFIG_RULES,
    )


app = make_app(os.environ.get(REDIS_URL_ENV) or NOWHERE_URL)


@app.task(name="live.fail")
def fail(n: int) -> None:
    raise ValueError(f"probe {n}")


@app.task(name="live.gated")
def gated(n: int) -> None:
    raise ValueError(f"gated {n}")


@app.task(name="live.dormant")
def dormant(n: int) -> None:
    raise ValueError(f"probe {n}")
