"""What a run costs in round trips to Redis: counted, so that one more fails here.

Counted on the journal's client in this process (`RoundTrips`), with the
run executed here as the worker's task executes it (`execute_run`); the
broker's publish is not counted (it is Celery's). Timings are for the
benchmarks (`benchmarks/throughput.py`, `benchmarks/profile_step.py`).
"""

from __future__ import annotations

import time

import pytest
import redis as redis_lib

import celery_durable
from celery_durable import step, workflow
from celery_durable.contrib.round_trips import RoundTrips, command_names
from celery_durable.extension import extension_for
from celery_durable.worker.run_task import execute_run
from celery_durable.workflows.runs import ResultWaiters


@step(name="tests.round_trips.inc")
def inc(x: int) -> int:
    return x + 1


@workflow(name="tests.round_trips.ten")
def ten_steps(x: int) -> int:
    for _ in range(10):
        x = inc(x)
    return x


@workflow(name="tests.round_trips.five")
def five_steps(x: int) -> int:
    for _ in range(5):
        x = inc(x)
    return x


@workflow(name="tests.round_trips.sleeper")
def sleeper(x: int) -> int:
    x = inc(x)
    celery_durable.sleep("1h")
    return inc(x)


@workflow(name="tests.round_trips.waiter")
def waiter(x: int) -> int:
    x = inc(x)
    return inc(x + celery_durable.wait_for_event("go"))


@workflow(name="tests.round_trips.echo_all")
def echo_all(*args: object, **kwargs: object) -> list:
    return [list(args), kwargs]


@pytest.fixture
def ext(durable_app):
    ext = extension_for(durable_app)
    # Warm up: connections open, scripts loaded, lazy settings read.
    for _ in range(2):
        run = celery_durable.start(ten_steps, 0)
        execute_run(ext, run.id, worker="warm")
        assert run.result(timeout=5) == 10
    return ext


def _execute(ext, run_id: str) -> RoundTrips:
    with RoundTrips(ext.redis) as trips:
        execute_run(ext, run_id, worker="counted")
    return trips


def test_start_is_one_round_trip(ext):
    with RoundTrips(ext.redis) as trips:
        run = celery_durable.start(ten_steps, 1)
    # One script records the run, its index entry and its dispatch timer.
    assert trips.commands == [["EVALSHA"]]
    with RoundTrips(ext.redis) as trips:
        again = celery_durable.start(ten_steps, 1, idempotency_key="k")
        same = celery_durable.start(ten_steps, 1, idempotency_key="k")
    assert trips.count == 2 and same.id == again.id != run.id


def test_a_ten_step_run_costs_eleven_round_trips(ext):
    run = celery_durable.start(ten_steps, 1)
    trips = _execute(ext, run.id)
    assert run.result(timeout=5) == 11
    # Claimed (and filed under the worker) as it is read; steps 1 to 9 one
    # append each; step 10 with the run's end, its tidying and the news for
    # result() in one.
    assert trips.count == 11, trips.commands
    assert trips.commands[0] == ["EVALSHA", "HGETALL", "XRANGE"]
    assert all(trip == ["EVALSHA"] for trip in trips.commands[1:10]), trips.commands
    assert trips.commands[10][-2:] == ["EVALSHA", "EVALSHA"]
    types = [event["type"] for event in run.events()]
    assert types[:2] == ["workflow.started", "workflow.executing"]
    assert types[-1] == "workflow.completed" and types.count("step.completed") == 10


def test_a_resumed_run_is_read_then_claimed(ext, redis_client):
    run = celery_durable.start(waiter, 1)
    execute_run(ext, run.id, worker="first")
    assert run.status() == "waiting"
    celery_durable.send_event(run.id, "go", 10)
    trips = _execute(ext, run.id)
    assert run.result(timeout=5) == 13
    # The claim sent with the read finds the run moved on and writes nothing;
    # the claim proper follows, filed under the worker in its round trip.
    assert trips.commands[:2] == [["EVALSHA", "HGETALL", "XRANGE"], ["SADD", "EVALSHA"]]
    types = [event["type"] for event in run.events()]
    assert types.count("workflow.executing") == 2
    assert not redis_client.sismember(ext.keys.worker_runs("counted"), run.id)


def test_each_step_costs_one_round_trip(ext):
    five, ten = celery_durable.start(five_steps, 0), celery_durable.start(ten_steps, 0)
    assert _execute(ext, ten.id).count - _execute(ext, five.id).count == 5
    assert (five.result(timeout=5), ten.result(timeout=5)) == (5, 10)


def test_no_script_exists_before_a_pipelined_append(ext):
    run = celery_durable.start(ten_steps, 2)
    trips = _execute(ext, run.id)
    assert not any("SCRIPT" in trip for trip in trips.commands), trips.commands


def test_a_suspension_takes_the_step_before_it_along(ext):
    run = celery_durable.start(sleeper, 1)
    trips = _execute(ext, run.id)
    assert run.status() == "sleeping"
    # Claimed as read; step 1's completion with the suspension and its timers;
    # off the worker's list.
    assert trips.commands == [
        ["EVALSHA", "HGETALL", "XRANGE"],
        ["ZADD", "ZREM", "EVALSHA"],
        ["SREM"],
    ]
    types = [event["type"] for event in run.events()]
    assert types[-2:] == ["sleep.started", "workflow.suspended"]
    assert "step.completed" in types


def _tidied(ext, redis_client, run_id: str, worker: str) -> bool:
    """Did the run's end drop its timers, take it off the worker, and report it?"""
    timers = [m.decode() for m in redis_client.zrange(ext.keys.timers(), 0, -1)]
    activities = redis_client.xrevrange(ext.keys.events(), count=5)
    return (
        not any(member.endswith(run_id) for member in timers)
        and not redis_client.sismember(ext.keys.worker_runs(worker), run_id)
        and any(run_id.encode() in fields[b"e"] for _, fields in activities)
    )


def test_the_end_is_tidied_in_its_round_trip(ext, redis_client):
    run = celery_durable.start(ten_steps, 5)
    assert not _tidied(ext, redis_client, run.id, "tidy")  # its dispatch timer is there
    execute_run(ext, run.id, worker="tidy")
    assert _tidied(ext, redis_client, run.id, "tidy")


def test_appends_go_on_after_redis_forgets_its_scripts(ext, redis_client):
    for attempt in range(2):  # the tidying's script is loaded after its first miss
        redis_client.script_flush()
        run = celery_durable.start(ten_steps, 3)
        execute_run(ext, run.id, worker="flushed")
        assert run.result(timeout=5) == 13
        assert _tidied(ext, redis_client, run.id, "flushed"), attempt


def test_command_names_reads_pipelines():
    pool = redis_lib.ConnectionPool()
    connection = pool.make_connection()
    packed = connection.pack_commands([("SADD", "k", "v"), ("EVALSHA", "abc", 0)])
    assert command_names(packed) == ["SADD", "EVALSHA"]
    assert command_names(connection.pack_command("GET", "k")) == ["GET"]


_big_calls: list[int] = []


@step(name="tests.round_trips.big")
def big(n: int) -> dict:
    _big_calls.append(n)
    return {"rows": [[i, "x" * 20, (i, i)] for i in range(n)]}


@workflow(name="tests.round_trips.big_result", max_retries=1)
def big_result(n: int) -> int:
    rows = big(n)["rows"]
    assert rows[5] == [5, "x" * 20, [5, 5]]  # as a replay sees it: tuples are lists
    if celery_durable.get_context().attempt == 1:
        raise RuntimeError("once more, replaying the step")
    return len(rows)


def test_an_event_with_a_packed_value_encodes_as_the_plain_one():
    from celery_durable.codec import Packed, packb
    from celery_durable.journal.events import Event

    value = {"rows": list(range(300)), "text": "é" * 100}
    data = {"position": 3, "name": "s", "result": Packed(value, packb(value)), "attempt": 1}
    built = Event.build(5, "step.completed", data, 12.5)
    plain = {**data, "result": value}
    assert built.data == plain
    assert built.encode() == Event(5, "step.completed", plain, 12.5).encode()
    many = {f"k{i}": Packed(i, packb(i)) for i in range(20)}
    assert Event.build(1, "step.completed", many, 1.0).encode() == (
        Event(1, "step.completed", {f"k{i}": i for i in range(20)}, 1.0).encode()
    )


def test_a_big_step_result_is_recorded_and_replayed(ext):
    _big_calls.clear()
    run = celery_durable.start(big_result, 200)
    execute_run(ext, run.id, worker="big")
    assert run.result(timeout=5) == 200
    assert _big_calls == [200]  # the second attempt replayed it
    completed = [e for e in run.events() if e["type"] == "step.completed"]
    assert completed[0]["data"]["result"]["rows"][5] == [5, "x" * 20, [5, 5]]


def test_the_result_of_a_finished_run_is_one_round_trip(ext):
    run = celery_durable.start(ten_steps, 4)
    execute_run(ext, run.id, worker="done")
    with RoundTrips(ext.redis) as trips:
        assert run.result(timeout=5) == 14
    assert trips.commands == [["HGET", "XREVRANGE"]]


def test_waiting_for_results_does_not_open_a_connection_each_time(
    ext, durable_worker, redis_client
):
    def connections() -> int:
        return int(redis_client.info("stats")["total_connections_received"])

    for x in range(3):  # warm up: the worker's threads take their connections
        assert celery_durable.start(ten_steps, x).result(timeout=10) == x + 10
    before = connections()
    for x in range(20):
        assert celery_durable.start(ten_steps, x).result(timeout=10) == x + 10
    assert connections() - before <= 2  # a pub/sub per result() would be 20


def test_result_reads_the_status_only_once_redis_confirmed_its_subscription(ext, redis_client):
    """redis-py sends SUBSCRIBE without reading its reply; a run that ended between
    it and the status read (Redis may run the read first) would wake result()
    only at its next poll. With every client paused, the confirmation cannot
    come before the pause ends, so neither may `subscribe()` return."""
    waiters = ext.component(ResultWaiters)
    channel = ext.keys.run_done_channel("confirm-me")
    redis_client.execute_command("CLIENT", "PAUSE", 600, "ALL")
    began = time.monotonic()
    waiters.subscribe(channel)
    assert time.monotonic() - began >= 0.5
    assert redis_client.pubsub_numsub(channel) == [(channel.encode(), 1)]
    waiters.unsubscribe(channel)


@workflow(name="tests.round_trips.then_spawn")
def then_spawn(x: int) -> list:
    x = inc(x)  # held, then written with the spawn's dispatch
    return celery_durable.gather(inc.spawn(x))


def test_a_held_completion_goes_before_a_dispatch_and_keeps_its_record_right(ext, redis_client):
    run = celery_durable.start(then_spawn, 1)
    execute_run(ext, run.id, worker="spawner")  # no worker takes the step: the run waits
    assert run.status() == "waiting"
    entries = redis_client.xrange(ext.keys.run_events(run.id))
    types = [e["type"] for e in run.events()]
    assert types[2:4] == ["step.completed", "step.dispatched"]
    dispatched_id = entries[3][0]
    # The record of the dispatched step (position 1) names its own event, not the one before.
    assert redis_client.hget(ext.keys.run_steps(run.id), "d:1") == dispatched_id


def test_arguments_are_recorded_as_encoded_once(ext):
    from celery_durable.codec import array_header, map_header, packb

    for size in (0, 3, 15, 16, 70_000):
        assert array_header(size) + b"".join(packb(i % 3) for i in range(size)) == packb(
            [i % 3 for i in range(size)]
        )
        assert map_header(size) + b"".join(packb(str(i)) + packb(i) for i in range(size)) == (
            packb({str(i): i for i in range(size)})
        )
    run = celery_durable.start(echo_all, (1, 2), {"k": [3]}, big="x" * 2000, n=None)
    started = run.events()[0]["data"]
    assert started["args"] == [[1, 2], {"k": [3]}]
    assert started["kwargs"] == {"big": "x" * 2000, "n": None}
    execute_run(ext, run.id, worker="args")
    assert run.result(timeout=5) == [[[1, 2], {"k": [3]}], {"big": "x" * 2000, "n": None}]
