"""Stand-ins for the outside world: inventory, payment gateway, carrier, mailer.

They behave like the real ones in the ways a workflow must handle: calls take
a little time, the payment gateway times out now and then, a card can be
declined, and the mail relay drops connections. Nothing here knows about
celery_durable; the steps in `steps.py` wrap these calls with retry policies,
and the plain Celery task in `tasks.py` is retried by an automation rule.
"""

from __future__ import annotations

import secrets
import time

from celery_durable import FatalError

# Stripe's test card that is always declined: the demo's failing order uses it.
DECLINED_CARD = "4000000000000002"

# Tries the mail relay refuses for each receipt before it accepts one.
RECEIPT_REFUSALS = 2

# Calls to the gateway per order in this process. A step retries inline in the
# process that runs it, so counting here is enough to fail each order's first try.
_charge_calls: dict[int, int] = {}


class GatewayTimeout(ConnectionError):
    """The payment gateway did not answer in time: worth trying again."""


class PaymentDeclined(FatalError):
    """The card was refused: retrying cannot help, so the run fails at once."""


def _latency(seconds: float = 0.02) -> None:
    time.sleep(seconds)


def reserve(order_id: int, items: list[dict]) -> dict:
    """Hold stock for every line of the order."""
    _latency()
    units = sum(int(line["qty"]) for line in items)
    return {"reservation": f"rsv_{order_id}_{secrets.token_hex(3)}", "units": units}


def release(reservation: str) -> dict:
    """Give reserved stock back (a refused payment, a return)."""
    _latency()
    return {"released": reservation}


def restock(items: list[dict]) -> dict:
    """Put returned goods back on the shelf."""
    _latency()
    return {"restocked": sum(int(line["qty"]) for line in items)}


def charge_card(order_id: int, amount_cents: int, card: str) -> dict:
    """Take the money: a declined card is refused at once, else the first call times out."""
    _latency(0.03)
    if card == DECLINED_CARD:
        raise PaymentDeclined(f"card ending {card[-4:]} was declined for order {order_id}")
    calls = _charge_calls[order_id] = _charge_calls.get(order_id, 0) + 1
    if calls == 1:
        raise GatewayTimeout(f"payment gateway timed out charging order {order_id}")
    return {"charge": f"ch_{secrets.token_hex(4)}", "amount_cents": amount_cents}


def refund_charge(charge: str, amount_cents: int) -> dict:
    """Give the money back."""
    _latency(0.03)
    return {"refund": f"re_{secrets.token_hex(4)}", "charge": charge, "amount_cents": amount_cents}


def book_shipment(order_id: int, address: str) -> dict:
    """Hand the parcel to the carrier."""
    _latency(0.04)
    return {"carrier": "ParcelCo", "tracking": f"PC{order_id}{secrets.randbelow(10**6):06d}"}


def send_email(to: str, subject: str) -> dict:
    """Tell the customer."""
    _latency(0.01)
    return {"to": to, "subject": subject, "message_id": f"<{secrets.token_hex(6)}@shop.example>"}


def send_receipt(to: str, order_id: int, amount_cents: int, attempt: int) -> dict:
    """Email the receipt: the relay drops the connection on each receipt's first tries.

    `attempt` counts this receipt's tries (1 for the first); the caller counts
    them, as the retries may run in another process than the first try.
    """
    _latency(0.01)
    if attempt <= RECEIPT_REFUSALS:
        raise ConnectionError(
            f"mail relay closed the connection sending the receipt for order {order_id}"
        )
    subject = f"Receipt for order {order_id}: {amount_cents / 100:.2f} EUR"
    return {"to": to, "subject": subject, "message_id": f"<{secrets.token_hex(6)}@shop.example>"}
