"""Steps and workflows shared by the tests; each step counts its runs in Redis."""

from __future__ import annotations

from celery_durable import step, workflow
from celery_durable.extension import extension_for


def count(name: str) -> int:
    return int(extension_for().redis.incr(f"test:count:{name}"))


@step
def add(a: int, b: int) -> int:
    count("add")
    return a + b


@step
def double(x: int) -> int:
    count("double")
    return x * 2


@step
def shout(text: str) -> str:
    count("shout")
    return text.upper()


@workflow(name="tests.arithmetic")
def arithmetic(a: int, b: int) -> dict:
    total = add(a, b)
    doubled = double(total)
    return {"total": total, "doubled": doubled, "word": shout("done")}


@workflow(name="tests.echo")
def echo(*args: object) -> list:
    return list(args)
