"""A workflow whose code changes between 'deploys', for the tests of patched().

`CODE["version"]` stands for the code deployed: the tests (and the worker
processes, through `DURABLE_TEST_CODE_VERSION`) set it.

- 1: charge, ship, wait for "go".
- 2: charge, `patched("fraud-check")` -> fraud check, ship, wait for "go".
- 3: charge, `deprecated_patch("fraud-check")`, fraud check, ship, wait for "go".
- 4: charge, fraud check, ship, wait for "go" (no patch: a breaking change).
- 5: charge, then a bug: the workflow raises.
"""

from __future__ import annotations

import os

from celery_durable import deprecated_patch, patched, sleep, step, wait_for_event, workflow
from celery_durable.extension import extension_for

CODE = {"version": int(os.environ.get("DURABLE_TEST_CODE_VERSION", "1"))}


def _count(name: str) -> None:
    extension_for().redis.incr(f"test:count:{name}")


@step
def charge(order: int) -> str:
    _count("charge")
    return f"receipt-{order}"


@step
def fraud_check(order: int) -> bool:
    _count("fraud_check")
    return True


@step
def ship(order: int, receipt: str) -> str:
    _count("ship")
    return f"shipped-{order}"


@workflow(name="tests.deploys.order")
def order(number: int) -> dict:
    version = CODE["version"]
    receipt = charge(number)
    if version == 5:
        raise RuntimeError("a bug in the new code")
    checked = False
    if version == 2 and patched("fraud-check"):
        checked = fraud_check(number)
    elif version == 3:
        deprecated_patch("fraud-check")
        checked = fraud_check(number)
    elif version >= 4:
        checked = fraud_check(number)
    shipped = ship(number, receipt)
    wait_for_event("go")
    return {"shipped": shipped, "checked": checked, "version": version}


@step
def inside(order: int) -> bool:
    return patched("in-a-step")


@workflow(name="tests.deploys.patch_in_step")
def patch_in_step(number: int) -> bool:
    return inside(number)


@workflow(name="tests.deploys.early_wait")
def early_wait(number: int) -> dict:
    wait_for_event("start")
    checked = False
    if CODE["version"] >= 2 and patched("fraud-check"):
        checked = fraud_check(number)
    wait_for_event("go")
    return {"checked": checked}


@workflow(name="tests.deploys.bad_change_id")
def bad_change_id() -> bool:
    return patched("")


@workflow(name="tests.deploys.sleeper")
def sleeper(number: int) -> str:
    receipt = charge(number)
    if CODE["version"] >= 4:  # a step added before the sleep: breaks sleeping runs
        fraud_check(number)
    sleep("1h")
    return ship(number, receipt)


NAP = 3.0  # long enough for a deploy to happen while the run sleeps


@workflow(name="tests.deploys.napper")
def napper(number: int) -> dict:
    receipt = charge(number)
    sleep(NAP)
    checked = False
    if CODE["version"] >= 2 and patched("fraud-check"):
        checked = fraud_check(number)
    ship(number, receipt)
    return {"checked": checked, "version": CODE["version"]}


@workflow(name="tests.deploys.bounded", max_duration="1h")
def bounded(number: int) -> str:
    charge(number)
    if CODE["version"] >= 4:
        fraud_check(number)
    wait_for_event("go")
    return "done"
