"""Count the round trips a redis-py client makes, with the commands of each.

A round trip is one send to Redis and the wait for its replies: a single
command, or a whole pipeline. What a test of cost asserts ("`start()` costs
two round trips"), and what `benchmarks/profile_step.py` prints: unlike a
timing, the count does not move with the load of the machine, so a change
that adds one fails a test at once.

    with RoundTrips(extension_for(app).redis) as trips:
        start(my_workflow, 1)
    assert trips.count == 2, trips.commands

Only this process's calls through this client's connection pool are
counted (from every thread): the broker's connections, and other
processes (workers), are not. Connections opened while counting are
counted with the commands redis-py sends on connecting; warm the client
up first to leave them out.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any


class RoundTrips:
    """A context manager that records each round trip of `client` as its command names."""

    def __init__(self, client: Any):
        self._pool = client.connection_pool
        self._lock = threading.Lock()
        self._wrapped: list[Any] = []
        self.trips: list[list[str]] = []

    @property
    def count(self) -> int:
        return len(self.trips)

    @property
    def commands(self) -> list[list[str]]:
        """The command names of each round trip, in order (for assertion messages)."""
        return [list(trip) for trip in self.trips]

    def __enter__(self) -> RoundTrips:
        pool = self._pool
        get_connection = pool.get_connection

        def counted_connection(*args: Any, **kwargs: Any) -> Any:
            connection = get_connection(*args, **kwargs)
            self._watch(connection)
            return connection

        pool.get_connection = counted_connection
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._pool.__dict__.pop("get_connection", None)
        with self._lock:
            for connection in self._wrapped:
                connection.__dict__.pop("send_packed_command", None)
            self._wrapped.clear()

    def _watch(self, connection: Any) -> None:
        if "send_packed_command" in connection.__dict__:
            return
        send = connection.send_packed_command

        def counted_send(command: Any, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.trips.append(command_names(command))
            return send(command, *args, **kwargs)

        connection.send_packed_command = counted_send
        with self._lock:
            self._wrapped.append(connection)

    def reset(self) -> None:
        with self._lock:
            self.trips.clear()


def command_names(packed: bytes | Iterable[bytes | memoryview]) -> list[str]:
    """The names of the commands in a RESP-encoded send (as redis-py packs them)."""
    if isinstance(packed, bytes | memoryview | bytearray):
        data = bytes(packed)
    else:
        data = b"".join(bytes(part) for part in packed)
    names: list[str] = []
    at = 0
    while at < len(data):
        if data[at : at + 1] != b"*":
            break  # not a command array: stop rather than guess
        line_end = data.index(b"\r\n", at)
        count = int(data[at + 1 : line_end])
        at = line_end + 2
        for index in range(count):
            line_end = data.index(b"\r\n", at)
            length = int(data[at + 1 : line_end])
            start = line_end + 2
            if index == 0:
                names.append(data[start : start + length].decode("ascii", "replace").upper())
            at = start + length + 2
    return names


__all__ = ["RoundTrips", "command_names"]
