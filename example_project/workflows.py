"""The shop's workflows: placing an order and taking one back.

A workflow is plain code that calls steps. It is run again from the top
whenever its run resumes, so everything that touches the outside world goes
through a step and the code between steps stays deterministic.
"""

from __future__ import annotations

from celery_durable import EventTimeoutError, Workflow, get_context, sleep, wait_for_event, workflow

from .steps import (
    charge,
    notify,
    queue_receipt,
    refund,
    release_stock,
    reserve_stock,
    restock,
    ship,
)


def order_total(items: list[dict]) -> int:
    """The amount to charge, in cents."""
    return sum(int(line["qty"]) * int(line["price_cents"]) for line in items)


@workflow(name="process_order", max_duration="7d")
def process_order(order: dict) -> dict:
    """Reserve, charge, wait for a reviewer's approval, ship, tell the customer.

    Gives the stock back if payment fails; refunds and gives it back if the
    reviewer rejects the order (or nobody decides within the hour).
    """
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

    # Orders go to review after a cooling-off period. A durable sleep: the
    # run's task ends here (status "sleeping"), holding no worker, and a
    # worker's timer poller resumes it when it is due. Two seconds keep the
    # demo quick; production would say sleep("2h").
    sleep("2s")
    # Then the run waits (status "waiting") until a reviewer's decision comes:
    # send_event(run_id, "approval", {"approved": ..., "by": ..., "reason": ...}).
    try:
        decision = wait_for_event("approval", timeout="1h")
    except EventTimeoutError:
        decision = {"approved": False, "by": "nobody", "reason": "no decision in time"}
    if not decision.get("approved"):
        money = refund(payment["charge"], total)
        release_stock(stock["reservation"])
        reason = decision.get("reason") or "rejected"
        notify(order["email"], f"Order {order_id} was cancelled ({reason}); you were refunded")
        return {
            "order": order_id,
            "status": "rejected",
            "reason": reason,
            "by": decision.get("by"),
            "refund": money["refund"],
        }

    shipment = ship(order_id, order["address"])
    notify(order["email"], f"Order {order_id} is on its way: {shipment['tracking']}")
    # The run id is recorded, so it is the same on every replay: the receipt's reference.
    receipt = queue_receipt(order_id, order["email"], total, get_context().run_id)
    return {
        "order": order_id,
        "status": "shipped",
        "approved_by": decision.get("by"),
        "amount_cents": total,
        "charge": payment["charge"],
        "tracking": shipment["tracking"],
        "receipt_task": receipt["task_id"],
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
