"""A celery_durable trigger that fires while a Celery queue holds too many messages.

An example of a third-party plugin: a polling `Trigger` subclass, returned
by a `durable_triggers` hook implementation, found through the
`celery_durable` entry-point group declared in this package's pyproject.toml.
Once the package is installed, every app with celery_durable accepts
`event: queue.backlog` in its rules:

```yaml
- name: Payments backlog
  trigger:
    event: queue.backlog
    queues: [payments, payments.priority]
    threshold: 500
  action:
    type: slack
    webhook_url: https://hooks.slack.com/services/...
    message: "{queue} has a backlog of 500+ messages"
```

One worker at a time (whichever takes the poll lock) reads the queues'
lengths from the broker every `interval_seconds`, and emits one
`queue.backlog` event per queue at or over the threshold, with data
`{"queue": name, "length": n, "threshold": t}`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from celery import Celery
from celery_durable.hookspecs import hookimpl
from celery_durable.rules.base import Trigger

__all__ = ["QUEUE_BACKLOG", "QueueBacklog", "durable_triggers", "queue_lengths"]

__version__ = "0.1.0.dev0"

QUEUE_BACKLOG = "queue.backlog"


class QueueBacklog(Trigger):
    """Some of `queues` hold `threshold` messages or more (waiting, not yet delivered).

    Fires again at every poll while the backlog lasts: pair it with a
    `circuit_breaker` (or a long `interval_seconds`) to bound the actions.
    """

    name = QUEUE_BACKLOG
    poll_interval = 5.0  # the default; a rule's `interval_seconds` sets its own
    variables = ("length", "threshold")  # usable in messages: "{queue} holds {length}"

    def __init__(self, queues: list[str], threshold: int, interval_seconds: float = 5.0):
        if not queues:
            raise ValueError("queues must name at least one queue")
        if not all(isinstance(q, str) and q.strip() for q in queues):
            raise ValueError(f"queues must be a list of queue names, got {queues!r}")
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold!r}")
        if not 0 < interval_seconds <= 3600:  # also refuses NaN
            raise ValueError(f"interval_seconds must be > 0 and <= 3600, got {interval_seconds!r}")
        self.queues = list(dict.fromkeys(queues))  # in order, once each
        self.threshold = threshold
        # celery_durable's poller reads `poll_interval` from the rule's trigger
        # instance, so an instance attribute overrides the class default.
        self.poll_interval = float(interval_seconds)

    def poll(self, context: Any) -> Iterator[dict[str, Any]]:
        lengths = queue_lengths(context.app, self.queues)  # the connection is closed here
        for queue in self.queues:
            if lengths[queue] >= self.threshold:
                yield {"queue": queue, "length": lengths[queue], "threshold": self.threshold}

    def matches(self, event: Any) -> bool:
        """Only this rule's queues, at this rule's threshold (another rule may differ)."""
        data = event.data
        return (
            event.type == self.name
            and data.get("queue") in self.queues
            and isinstance(data.get("length"), int)
            and data["length"] >= self.threshold
        )


def queue_lengths(app: Celery, queues: Iterable[str]) -> dict[str, int]:
    """The number of messages waiting in each queue, as the app's broker tells it.

    `queue_declare` reports a queue's ready messages (not those workers have
    reserved), on any kombu transport. A passive one never creates the queue;
    a queue that does not exist has no backlog. On Redis a plain declare
    creates nothing either (a queue is a list that exists while it holds
    messages): it adds up the queue's list and its priority sub-lists, with
    the transport's `global_keyprefix`. It is used there because kombu's
    passive declare checks with EXISTS, which the transport does not prefix,
    so it would find no queue at all under a `global_keyprefix`.
    """
    lengths: dict[str, int] = {}
    with app.connection_for_read() as conn:
        passive = conn.transport.driver_type != "redis"
        channel = conn.channel()
        try:
            for queue in queues:
                try:
                    declared = channel.queue_declare(queue=queue, passive=passive)
                    lengths[queue] = int(declared.message_count)
                except conn.channel_errors:
                    lengths[queue] = 0
                    _close(channel)  # AMQP closes a channel on NOT_FOUND
                    channel = conn.channel()
        finally:
            _close(channel)
    return lengths


def _close(channel: Any) -> None:
    with contextlib.suppress(Exception):
        channel.close()


@hookimpl
def durable_triggers() -> list[type[Trigger]]:
    return [QueueBacklog]
