"""Apps that share a broker queue but not a journal: no run message is ever dropped.

Two apps with different `durable_key_prefix`es on one broker's default
queue, or a client and a worker that disagree on `durable_redis_url`: each
worker receives run messages of the other journal. It must hand them back to
the queue (and say so loudly), never drop them as unknown runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery import Celery, current_app
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable.extension import extension_for
from celery_durable.journal.identity import JournalId, journal_id
from celery_durable.settings import Settings
from tests.apps import journals
from tests.waiting import wait_until

APPS = "tests.apps.journals"
FOREIGN = "belongs to another journal"
DROPPED = "message dropped"


@pytest.fixture
def clients(durable_redis_url: str) -> Iterator[dict[str, Celery]]:
    """Client apps in the test process, one per journal the workers serve."""
    previous = current_app._get_current_object()
    db1 = journals.in_database(durable_redis_url, 1)
    redis.Redis.from_url(db1).flushdb()
    apps = {
        "alpha": journals.make_app(durable_redis_url, prefix="alpha", main="client-alpha"),
        "beta": journals.make_app(durable_redis_url, prefix="beta", main="client-beta"),
        "db1": journals.make_app(durable_redis_url, journal_url=db1, main="client-db1"),
    }
    yield apps
    for app in apps.values():
        extension_for(app).redis.close()
        app.close()
    previous.set_current()


def _start(app: Celery, count: int) -> list:
    app.set_current()
    return [celery_durable.start(journals.doubled, n) for n in range(count)]


def _all_completed(runs: list) -> bool:
    return all(run.status() == "completed" for run in runs)


@pytest.mark.slow
def test_two_prefixes_on_one_queue_complete_every_run(clients, durable_worker_processes):
    alpha_worker = durable_worker_processes.start(app=f"{APPS}:alpha")
    beta_worker = durable_worker_processes.start(app=f"{APPS}:beta")
    alpha_runs = _start(clients["alpha"], 20)
    beta_runs = _start(clients["beta"], 20)

    wait_until(
        lambda: _all_completed(alpha_runs) and _all_completed(beta_runs),
        timeout=90,
        what=lambda: (
            "every run completed; statuses: "
            + str(sorted(r.status() for r in alpha_runs + beta_runs))
        ),
    )
    for n, run in enumerate(alpha_runs + beta_runs):
        assert run.result(timeout=1)["doubled"] == 2 * (n % 20)
    logs = alpha_worker.log_text() + beta_worker.log_text()
    assert DROPPED not in logs
    # Each worker got some of the other's messages (40 messages on one queue)
    # and said so, once per journal per minute, not once per message.
    for worker, other in ((alpha_worker, "'beta'"), (beta_worker, "'alpha'")):
        reports = [line for line in worker.log_lines() if FOREIGN in line]
        assert len(reports) == 1, worker.tail()
        assert f"key prefix {other}" in reports[0]


@pytest.mark.slow
def test_a_run_of_a_journal_no_worker_serves_waits_for_one(
    clients, durable_worker_processes, durable_redis_url
):
    """A client whose journal is database 1; the first worker's is database 0."""
    worker = durable_worker_processes.start(app=f"{APPS}:alpha")
    runs = _start(clients["db1"], 5)
    # Forwarded to the queue of database 1's journal, where they wait.
    queue = extension_for(clients["db1"]).journal_id.queue
    broker = redis.Redis.from_url(durable_redis_url)
    wait_until(lambda: broker.llen(queue) == 5, timeout=20, what=f"5 messages in {queue}")
    assert FOREIGN in worker.log_text()
    assert {run.status() for run in runs} == {"pending"}

    db1_worker = durable_worker_processes.start(app=f"{APPS}:elsewhere")
    wait_until(lambda: _all_completed(runs), timeout=60, what="the runs of database 1 completed")
    assert DROPPED not in worker.log_text()
    assert "consuming it from now on" in db1_worker.log_text()


def test_one_redis_under_two_names_is_one_journal(durable_redis_url):
    """`localhost` and `127.0.0.1`: other fingerprints, but the run is in the worker's journal."""
    assert "127.0.0.1" in durable_redis_url
    previous = current_app._get_current_object()
    client = journals.make_app(
        durable_redis_url,
        journal_url=durable_redis_url.replace("127.0.0.1", "localhost"),
        main="client-localhost",
    )
    worker_app = journals.make_app(durable_redis_url, main="worker-127")
    worker_app.conf.worker_hijack_root_logger = False
    assert extension_for(client).journal_id != extension_for(worker_app).journal_id
    try:
        with start_worker(worker_app, pool="solo", perform_ping_check=False) as worker:
            client.set_current()
            run = celery_durable.start(journals.doubled, 21)
            assert run.result(timeout=15)["doubled"] == 42
            # Nothing was forwarded: the worker consumes its usual queues only
            # (Celery's own integration suite checks both of these).
            consumer = worker.consumer.task_consumer
            assert [q.name for q in consumer.queues] == ["celery"]
            assert set(worker_app.amqp.queues) == {"celery"}
    finally:
        previous.set_current()
        for app in (client, worker_app):
            extension_for(app).redis.close()
            app.close()


def _settings(url: str, **kwargs) -> Settings:
    return Settings(redis_url=url, **kwargs)


def test_the_journal_id_names_no_credentials():
    plain = journal_id(_settings("redis://cache.example:6380/2"))
    secret = journal_id(_settings("redis://user:hunter2@cache.example:6380/2"))
    assert plain == secret and "hunter2" not in str(secret.as_message())
    assert journal_id(_settings("rediss://cache.example:6380/2")) == plain
    others = [
        journal_id(_settings("redis://cache.example:6380/3")),
        journal_id(_settings("redis://cache.example:6381/2")),
        journal_id(_settings("redis://other.example:6380/2")),
        journal_id(_settings("redis://cache.example:6380/2", key_prefix="shop")),
        journal_id(_settings("unix:///tmp/redis.sock?db=2")),
    ]
    assert len({plain, *others}) == 6
    assert JournalId.from_message(plain.as_message()) == plain
    assert JournalId.from_message(None) is None
