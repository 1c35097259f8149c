"""In-process signals (blinker) for users who prefer code to rules.

```python
from celery_durable.signals import run_finished

@run_finished.connect
def on_run_finished(sender, run_id, status, workflow_name, **extra): ...
```

Receivers run in the process where the thing happened (a pool child for a
finished run or a failed task's rule, the worker's main process for actions
and breakers); keep them quick. Their exceptions are logged, never raised.
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import Namespace

logger = logging.getLogger("celery_durable.signals")

_signals = Namespace()

#: A rule matched an event and its actions were queued.
#: sender: the rule's name; kwargs: event (Activity), execution_id.
rule_fired = _signals.signal("rule-fired")

#: One action of a rule ran. sender: the rule's name; kwargs: action (its
#: type), ok (bool), result, execution_id.
action_done = _signals.signal("action-done")

#: A rule's circuit breaker opened. sender: the rule's name; kwargs:
#: executions, window_seconds, closes_at.
breaker_opened = _signals.signal("breaker-opened")

#: A workflow run ended. sender: the app; kwargs: run_id, status, workflow_name.
run_finished = _signals.signal("run-finished")


def send(signal: Any, sender: Any, **kwargs: Any) -> None:
    """Send without letting a receiver's error escape into the engine."""
    if not signal.receivers:
        return
    try:
        signal.send(sender, **kwargs)
    except Exception:
        logger.exception("a receiver of %s failed", signal.name)
