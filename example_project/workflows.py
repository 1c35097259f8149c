"""The shop's workflows: placing an order and taking one back.

A workflow is plain code that calls steps. It is run again from the top
whenever its run resumes, so everything that touches the outside world goes
through a step and the code between steps stays deterministic.
"""

from __future__ import annotations

from celery_durable import Workflow, get_context, workflow

from .steps import charge, notify, refund, release_stock, reserve_stock, restock, ship


def order_total(items: list[dict]) -> int:
    """The amount to charge, in cents."""
    return sum(int(line["qty"]) * int(line["price_cents"]) for line in items)


@workflow(name="process_order", max_duration="7d")
def process_order(order: dict) -> dict:
    """Reserve, charge, ship, tell the customer; give the stock back if payment fails."""
    order_id = order["id"]
    total = order_total(order["items"])
    stock = reserve_stock(order_id, order["items"])
    try:
        payment = charge(order_id, total, order["card"])
    except Exception:
        # Whatever stopped the payment (a declined card, a gateway that stayed
        # down), the goods must not stay held for an order that will not ship.
        release_stock(stock["reservation"])
        notify(order["email"], f"Order {order_id}: your payment did not go through")
        raise
    shipment = ship(order_id, order["address"])
    notify(order["email"], f"Order {order_id} is on its way: {shipment['tracking']}")
    return {
        "order": order_id,
        "amount_cents": total,
        "charge": payment["charge"],
        "tracking": shipment["tracking"],
    }


class ReturnOrder(Workflow):
    """A customer sends an order back: refund, restock, confirm (the class form)."""

    name = "return_order"
    max_duration = "30d"

    def run(self, order: dict, charge_id: str) -> dict:
        # The run id is recorded, so it is the same on every replay: a stable
        # reference to quote to the customer.
        reference = get_context().run_id[:8]
        total = order_total(order["items"])
        money = refund(charge_id, total)
        restock(order["items"])
        notify(order["email"], f"Return {reference} of order {order['id']}: refunded")
        return {"order": order["id"], "refund": money["refund"], "reference": reference}
