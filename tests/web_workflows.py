"""Workflows the web tests run: a run waiting for an approval, one paid through a webhook URL."""

from __future__ import annotations

from celery_durable import step, wait_for_event, webhook_url, workflow
from celery_durable.extension import extension_for

URL_KEY = "test:webhook_url"


@step
def hand_out(url: str) -> str:
    """What a real step would send to the payment provider; the test reads it from Redis."""
    extension_for().redis.set(URL_KEY, url)
    return url


@workflow(name="tests.web.approve")
def approve(order: int) -> dict:
    decision = wait_for_event("approval", timeout="1h")
    return {"order": order, "approval": decision}


@workflow(name="tests.web.pay")
def pay(order: int) -> dict:
    hand_out(webhook_url("paid"))
    paid = wait_for_event("paid", timeout="1h")
    shipped = wait_for_event("shipped", timeout="1h")
    return {"order": order, "paid": paid, "shipped": shipped}


@workflow(name="tests.web.declined")
def declined(order: int) -> None:
    from celery_durable import FatalError

    raise FatalError(f"card declined for order {order}")
