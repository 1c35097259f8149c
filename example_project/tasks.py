"""Plain Celery tasks of the shop: no durable machinery, just `@app.task`.

`send_receipt_email` is flaky in the way network calls are: the mail relay
drops the connection on the first tries of every receipt, and the task simply
raises `ConnectionError`. It has no retry code of its own. The rule
"Retry receipt emails on network errors" in `rules.yaml` sees the failure in
the worker and sends the task again, exactly as it was sent, after a delay.
"""

from __future__ import annotations

import json
import time
from typing import Any

from . import services
from .celery import app, shop_redis

# A Redis list of the emails the relay accepted, newest last (a mail catcher).
SENT_MAIL_KEY = "example_project:mail:sent"
TRIES_TTL = 86400


def tries_key(reference: str) -> str:
    return f"example_project:receipt:{reference}:tries"


@app.task(name="example_project.tasks.send_receipt_email")
def send_receipt_email(order_id: int, email: str, amount_cents: int, reference: str) -> dict:
    """Email an order's receipt; `reference` (the order's run id) names this receipt.

    Tries are counted in Redis, not in memory: a retry may run in another pool
    process, or on another worker, than the try before it.
    """
    redis = shop_redis()
    pipe = redis.pipeline()
    pipe.incr(tries_key(reference))
    pipe.expire(tries_key(reference), TRIES_TTL)
    attempt = int(pipe.execute()[0])
    sent = services.send_receipt(email, order_id, amount_cents, attempt)  # may raise
    record: dict[str, Any] = {
        **sent,
        "order": order_id,
        "reference": reference,
        "task_id": send_receipt_email.request.id,
        "attempt": attempt,
        "ts": time.time(),
    }
    redis.rpush(SENT_MAIL_KEY, json.dumps(record))
    return record
