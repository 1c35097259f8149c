"""The journal's fenced appends, against a real Redis."""

from __future__ import annotations

import threading

import pytest

import celery_durable
from celery_durable.errors import JournalConflictError, JournalCorruptError
from celery_durable.journal import Event, Journal
from celery_durable.keys import Keys


@pytest.fixture
def journal(redis_client) -> Journal:
    return Journal(redis_client, Keys("jt"))


def test_append_is_fenced_on_the_expected_position(journal, redis_client):
    journal.append("r1", 0, [("workflow.started", {"name": "w"})])
    journal.append("r1", 1, [("workflow.executing", {"worker": "a"})])
    with pytest.raises(JournalConflictError) as info:
        journal.append("r1", 1, [("workflow.executing", {"worker": "stale"})])
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert "nothing was written" in str(info.value)
    events = journal.read("r1")
    assert [(e.seq, e.type, e.data) for e in events] == [
        (1, "workflow.started", {"name": "w"}),
        (2, "workflow.executing", {"worker": "a"}),
    ]
    assert redis_client.xlen(journal.keys.run_events("r1")) == 2
    assert journal.meta("r1")["seq"] == "2"


def test_a_writer_ahead_of_the_log_is_refused_too(journal):
    journal.append("r1", 0, [("workflow.started", {})])
    with pytest.raises(JournalConflictError):
        journal.append("r1", 5, [("step.completed", {})])
    assert len(journal.read("r1")) == 1


def test_concurrent_writers_at_one_position_one_wins(journal):
    journal.append("r1", 0, [("workflow.started", {})])
    barrier = threading.Barrier(10)
    wins, losses = [], []

    def writer(n: int) -> None:
        barrier.wait(timeout=10)
        try:
            journal.append("r1", 1, [("workflow.executing", {"worker": n})])
            wins.append(n)
        except JournalConflictError:
            losses.append(n)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(wins) == 1 and len(losses) == 9
    assert [e.data.get("worker") for e in journal.read("r1")] == [None, wins[0]]


def test_several_events_in_one_append_get_consecutive_positions(journal):
    events = journal.append("r1", 0, [("workflow.started", {}), ("workflow.executing", {})])
    assert [e.seq for e in events.events] == [1, 2]
    assert journal.status("r1") == "running"


def test_reaching_a_final_status_is_published(journal, redis_client):
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(journal.keys.run_done_channel("r1"))
    journal.append("r1", 0, [("workflow.started", {})])
    journal.append("r1", 1, [("workflow.completed", {"result": 1})])
    message = None
    for _ in range(50):
        message = pubsub.get_message(timeout=0.1)
        if message:
            break
    pubsub.close()
    assert message is not None and message["data"] == b"completed"


def test_keys_of_one_run_share_a_hash_tag():
    keys = Keys("durable")
    assert keys.run_events("abc") == "durable:run:{abc}:events"
    assert keys.run_meta("abc") == "durable:run:{abc}:meta"
    assert keys.run_inbox("abc") == "durable:run:{abc}:inbox"
    # A child run shares its family's slot, so its end can notify its parent atomically.
    assert keys.run_meta("abc.3") == "durable:run:{abc}.3:meta"


def test_keys_used_together_by_a_script_share_a_slot():
    from redis.cluster import key_slot

    keys = Keys("durable")
    for rule in ("Auto-retry", "odd {name} with braces", "naïve"):
        slots = {
            key_slot(k.encode())
            for k in (
                keys.rule_breaker(rule),
                keys.rule_breaker_open(rule),
                keys.rule_history(rule),
            )
        }
        assert len(slots) == 1, rule
    run_keys = (
        keys.run_events("r1"),
        keys.run_meta("r1"),
        keys.run_inbox("r1"),
        keys.run_meta("r1.0"),
        keys.run_inbox("r1.0.2"),
    )
    assert len({key_slot(k.encode()) for k in run_keys}) == 1


def test_corrupt_and_unknown_events_are_named(journal, redis_client):
    stream = journal.keys.run_events("r1")
    redis_client.xadd(stream, {"e": b"\xc1not msgpack"})
    with pytest.raises(JournalCorruptError, match=r"run r1, stream entry .*cannot decode"):
        journal.read("r1")
    redis_client.delete(stream)
    redis_client.xadd(stream, {"e": Event(seq=1, type="alien.event").encode()})
    with pytest.raises(JournalCorruptError, match=r"unknown type 'alien\.event'"):
        journal.read("r1")


def test_corrupt_journal_fails_that_run_and_the_worker_goes_on(
    durable_app, durable_worker, redis_client
):
    from celery_durable.extension import extension_for

    ext = extension_for(durable_app)
    ext.journal.create(
        "broken", "tests.arithmetic", {"name": "tests.arithmetic", "args": [1, 2], "kwargs": {}}
    )
    redis_client.xadd(ext.keys.run_events("broken"), {"e": b"garbage"})
    ext.dispatch("broken")
    broken = celery_durable.get_run("broken")
    with pytest.raises(JournalCorruptError, match="cannot decode"):
        broken.result(timeout=15)
    from tests.steps import arithmetic

    assert celery_durable.start(arithmetic, 2, 2).result(timeout=15)["total"] == 4
