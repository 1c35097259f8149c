"""Starting runs and looking at them: `start()`, `get_run()`, `RunHandle`."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from typing import Any

import redis
from celery import Celery

from .. import failures
from ..codec import Packed, array_header, encode, map_header, packb
from ..errors import (
    ConfigurationError,
    JournalCorruptError,
    ResultTimeoutError,
    RunNotFoundError,
)
from ..extension import DurableExtension, extension_for
from ..journal.events import FINAL_STATUSES, Event, EventType, RunStatus
from ..limits import check_size
from ..options import parse_duration
from .context import current_execution
from .control import cancel
from .registry import Startable, WorkflowDefinition

# Run ids derived from idempotency keys live in their own UUID namespace.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("7f0c2a5e-3b59-4d8e-9c61-5f2d7c0f4a11")
SUBSCRIBE_TIMEOUT = 10.0  # seconds for Redis to confirm a result() subscription


class RunHandle:
    """A handle on one run; cheap to make, holds no state but the id."""

    def __init__(self, run_id: str, extension: DurableExtension):
        self.id = run_id
        self._ext = extension

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def status(self) -> str:
        """pending, running, sleeping, waiting, blocked, completed, failed, cancelled, timed_out."""
        status = self._ext.journal.status(self.id)
        if status is None:
            raise RunNotFoundError(f"no run with id {self.id!r}")
        return status

    def events(self) -> list[dict[str, Any]]:
        """The recorded history, oldest first, as dicts with seq, type, ts, data.

        The whole history in one read: up to `durable_max_run_events` events.
        To page through a long one, use `describe_run(run_id, limit=, cursor=)`
        (what `celery durable runs show` does).
        """
        return [event.as_dict() for event in self._ext.journal.read(self.id)]

    def cancel(self) -> bool:
        """Cancel the run; False if it had already finished. See `cancel_run`."""
        return cancel(self._ext, self.id)

    def result(self, timeout: float | str | None = None) -> Any:
        """Wait for the run to end; return its result or raise its error.

        Raises `ResultTimeoutError` when `timeout` seconds pass first (the run
        goes on); a failed run raises its error rebuilt with its original type
        when that type is importable here, `WorkflowFailedError` otherwise; a
        cancelled one `WorkflowCancelledError`, a timed out one
        `WorkflowTimedOutError`. Inside a workflow, waiting for a child run is
        durable: the parent suspends until the child ends (`timeout` then
        raises `EventTimeoutError`).
        """
        timeout = parse_duration(timeout, field="result(timeout)")
        execution = current_execution.get()
        if execution is not None:
            return execution.child_result(self.id, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        status, last = self._status_and_last()
        if status in FINAL_STATUSES:  # the common case of a finished run: no pub/sub
            return self._outcome(status, last)
        channel = self._ext.keys.run_done_channel(self.id)
        waiters = self._ext.component(ResultWaiters)
        pubsub = waiters.subscribe(channel)
        try:
            while True:
                # After subscribing: a finish between is not missed.
                status, last = self._status_and_last()
                if status in FINAL_STATUSES:
                    return self._outcome(status, last)
                wait = 1.0
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise ResultTimeoutError(
                            f"run {self.id} is still {status} after {timeout:g}s"
                        )
                    wait = min(wait, remaining)
                try:
                    waiters.wait(pubsub, channel, wait)
                except redis.ConnectionError:  # Redis restarting: poll until it is back
                    time.sleep(min(wait, 0.5))
                    waiters.drop()
                    pubsub = waiters.subscribe(channel)
        finally:
            waiters.unsubscribe(channel)

    def _status_and_last(self) -> tuple[str, Event | None]:
        """The run's status and last event, in one round trip."""
        status, last = self._ext.journal.status_and_last(self.id)
        if status is None:
            raise RunNotFoundError(f"no run with id {self.id!r}")
        return status, last

    def _outcome(self, status: str, last: Event | None) -> Any:
        if status == RunStatus.COMPLETED and last and last.type == EventType.WORKFLOW_COMPLETED:
            return last.data["result"]
        if last is not None and "error" in last.data:
            raise failures.rebuild(last.data["error"])
        raise JournalCorruptError(f"run {self.id} is {status} but its last event is {last!r}")


class ResultWaiters:
    """One pub/sub connection per thread, kept, for `RunHandle.result()` to wait on.

    redis-py's `PubSub.close()` closes its connection: a new pub/sub per
    `result()` would open a connection (and its handshake) per call. This
    keeps one per thread (per process: a fork gets its own), subscribed
    only while a `result()` of that thread waits.
    """

    def __init__(self, ext: DurableExtension):
        self._ext = ext
        self._local = threading.local()

    def _pubsub(self) -> Any:
        held = getattr(self._local, "pubsub", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        pubsub = self._ext.redis.pubsub()
        self._local.pubsub = (os.getpid(), pubsub)
        return pubsub

    def subscribe(self, channel: str) -> Any:
        """Subscribed to `channel` once Redis says so.

        redis-py sends SUBSCRIBE without reading its reply, and Redis may run
        the caller's next command (the status read, on another connection)
        first: a run that ends between the two would publish to nobody, and
        its `result()` would only see it at its next poll, a second later.
        """
        pubsub = self._pubsub()
        pubsub.subscribe(channel)
        end = time.monotonic() + SUBSCRIBE_TIMEOUT
        while (left := end - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=left)
            if message is not None and _is(message, "subscribe", channel):
                return pubsub
        raise redis.TimeoutError(
            f"Redis did not confirm SUBSCRIBE {channel} in {SUBSCRIBE_TIMEOUT:g}s"
        )

    def wait(self, pubsub: Any, channel: str, timeout: float) -> None:
        """Until a message on `channel` comes, or `timeout` seconds pass.

        Messages of channels this thread waited on before are dropped.
        """
        end = time.monotonic() + timeout
        while True:
            message = pubsub.get_message(timeout=max(0.0, end - time.monotonic()))
            if message is not None and _is(message, "message", channel):
                return
            if time.monotonic() >= end:
                return

    def unsubscribe(self, channel: str) -> None:
        held = getattr(self._local, "pubsub", None)
        if held is None or held[0] != os.getpid():
            return
        try:
            held[1].unsubscribe(channel)
        except redis.RedisError:  # a broken connection: a new one next time
            self.drop()

    def drop(self) -> None:
        """Close this thread's pub/sub (its connection broke); the next use makes one."""
        held = getattr(self._local, "pubsub", None)
        self._local.pubsub = None
        if held is not None and held[0] == os.getpid():
            with contextlib.suppress(redis.RedisError):
                held[1].close()


def _is(message: dict[str, Any], kind: str, channel: str) -> bool:
    """A pub/sub message of this kind on this channel (others: earlier channels' leftovers)."""
    return message.get("type") == kind and message.get("channel") in (channel, channel.encode())


def get_run(run_id: str, *, app: Celery | None = None) -> RunHandle:
    """A handle for an existing run of `app`'s journal; `RunNotFoundError` if there is none."""
    ext = extension_for(app)
    if ext.journal.status(run_id) is None:
        raise RunNotFoundError(f"no run with id {run_id!r}")
    return RunHandle(run_id, ext)


def start(
    workflow: Startable | str,
    /,
    *args: Any,
    idempotency_key: str | None = None,
    app: Celery | None = None,
    **kwargs: Any,
) -> RunHandle:
    """Start a run and return at once; the same idempotency key gives the same run.

    `app` names the Celery app whose journal records the run (by default
    the current one), so the workflow itself cannot take a keyword argument
    called `app` (nor `idempotency_key`) through `start()`.

    Arguments are checked before anything is written: a value that cannot be
    recorded, or is over `durable_max_payload_bytes` encoded, raises
    `EncodingError` naming the argument (and its size). Called inside a
    workflow, it starts a child run, recorded like a step (a replay does not
    start it again); `handle.result()` there waits for the child durably. The run's id is
    derived from (workflow name, idempotency key), so concurrent starts with
    one key race on one journal and exactly one of them dispatches the run.
    Recording is all or nothing: a `start()` that raised (Redis unreachable,
    `RedisOutOfMemoryError`) left a complete run (with the timer that
    dispatches it) or nothing; with an idempotency key, call it again.
    """
    name = _workflow_name(workflow)
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not idempotency_key
    ):
        raise ConfigurationError(
            f"start({name}): idempotency_key must be a non-empty string, got {idempotency_key!r}"
        )
    ext = extension_for(app)
    encoded = check_arguments(ext, f"start({name})", args, kwargs)
    execution = current_execution.get()
    if execution is not None:  # a child run, recorded like a step
        child_id = execution.start_child(name, list(args), kwargs, idempotency_key)
        return RunHandle(child_id, ext)
    run_id, _ = create_run(ext, name, list(args), kwargs, idempotency_key, encoded=encoded)
    return RunHandle(run_id, ext)


def check_arguments(
    ext: DurableExtension, where: str, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]
) -> tuple[Packed, Packed]:
    """Refuse arguments that cannot be recorded or are too big, naming the argument.

    Each is encoded once, here: the encodings come back (args, kwargs) for
    `create_run` to record as they are.
    """
    raw_args = [encode(v, where=f"{where}: argument {i}") for i, v in enumerate(args)]
    raw_kwargs = [
        (packb(key), encode(value, where=f"{where}: keyword argument {key!r}"))
        for key, value in kwargs.items()
    ]
    limit = ext.settings.max_payload_bytes
    for index, raw in enumerate(raw_args):
        check_size(raw, limit, what=f"{where}: argument {index}")
    for key, (_, raw) in zip(kwargs, raw_kwargs, strict=True):
        check_size(raw, limit, what=f"{where}: keyword argument {key!r}")
    packed_args = array_header(len(raw_args)) + b"".join(raw_args)
    packed_kwargs = map_header(len(raw_kwargs)) + b"".join(k + v for k, v in raw_kwargs)
    # Each fits; together they are recorded in one event (the list around them
    # is not user nesting, so only the size is left to check).
    together = array_header(2) + packed_args + packed_kwargs
    check_size(together, limit, what=f"{where}: the arguments together")
    return Packed(list(args), packed_args), Packed(kwargs, packed_kwargs)


def create_run(
    ext: DurableExtension,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    idempotency_key: str | None,
    *,
    started: dict[str, Any] | None = None,
    encoded: tuple[Packed, Packed] | None = None,
) -> tuple[str, bool]:
    """Record a top-level run and dispatch it: (its id, whether this call created it).

    The arguments are checked already; `encoded`, what `check_arguments`
    made of them, is recorded as it is (else they are encoded here). `started` adds to the data of
    `workflow.started` (a scheduled run's schedule and tick). With a key
    that an earlier call used, nothing is written and the existing run's id
    comes back with False.
    """
    if idempotency_key is None:
        run_id = uuid.uuid4().hex
    else:
        run_id = uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{name}\x00{idempotency_key}").hex
    data: dict[str, Any] = {
        "name": name,
        "args": list(args) if encoded is None else encoded[0],
        "kwargs": kwargs if encoded is None else encoded[1],
        "idempotency_key": idempotency_key,
    }
    if started:
        data.update(started)
    # One script records the run, its index entry and the timer that sends it
    # should this process fail to: all of it, or nothing (Redis out of memory
    # raises RedisOutOfMemoryError, and start() may simply be called again).
    redispatch_at = ext.clock.now() + ext.settings.redispatch_after
    created = ext.journal.create(
        run_id, name, data, timer=(ext.timers.dispatch_member(run_id), redispatch_at)
    )
    if created is not None:
        ext.launch(run_id)
    return run_id, created is not None


def _workflow_name(workflow: Startable | str) -> str:
    if isinstance(workflow, str):
        return workflow  # may be defined only on the workers
    definition = getattr(workflow, "definition", None)
    if isinstance(definition, WorkflowDefinition):
        return definition.name
    if isinstance(workflow, type) and callable(getattr(workflow, "start", None)):
        # a Workflow subclass is given its definition with its run()
        raise ConfigurationError(f"{workflow.__qualname__} has no run() method to start")
    raise ConfigurationError(
        f"start() takes a @workflow function, a Workflow subclass or a workflow name, "
        f"got {workflow!r}"
    )


__all__ = ["RunHandle", "check_arguments", "create_run", "get_run", "start"]
