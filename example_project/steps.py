"""The durable steps of the shop: each outside call, with its retry policy.

A step's result is recorded in the run's journal once; when a run is executed
again (a retry, a crash, a deploy) the recorded result is returned and the
outside world is not called twice. Policies are set per step because each
service fails in its own way.
"""

from __future__ import annotations

from celery_durable import step

from . import services
from .tasks import send_receipt_email


@step(max_retries=2, retry_delay="0.1s")
def reserve_stock(order_id: int, items: list[dict]) -> dict:
    return services.reserve(order_id, items)


@step(max_retries=2, retry_delay="0.1s")
def release_stock(reservation: str) -> dict:
    return services.release(reservation)


@step(max_retries=2, retry_delay="0.1s")
def restock(items: list[dict]) -> dict:
    return services.restock(items)


# The gateway times out now and then: retry quickly, then back off. A declined
# card raises PaymentDeclined, a FatalError, which no policy retries.
@step(max_retries=3, retry_delay="0.2s", backoff=2.0)
def charge(order_id: int, amount_cents: int, card: str) -> dict:
    return services.charge_card(order_id, amount_cents, card)


@step(max_retries=3, retry_delay="0.2s", backoff=2.0)
def refund(charge_id: str, amount_cents: int) -> dict:
    return services.refund_charge(charge_id, amount_cents)


@step(max_retries=2, retry_delay="0.5s")
def ship(order_id: int, address: str) -> dict:
    return services.book_shipment(order_id, address)


@step(max_retries=5, retry_delay="1s", max_retry_delay="30s")
def notify(email: str, subject: str) -> dict:
    return services.send_email(email, subject)


# Hands the receipt to a plain Celery task, on its own queue: its failures are
# retried by an automation rule, not by this workflow. The step records the
# task's id, so a replay does not send the task again (a worker dying between
# sending and recording would: at least once, hence the `reference`).
@step(max_retries=2, retry_delay="0.5s")
def queue_receipt(order_id: int, email: str, amount_cents: int, reference: str) -> dict:
    sent = send_receipt_email.delay(order_id, email, amount_cents, reference)
    return {"task_id": sent.id}
