"""Start a private `redis-server` on a free loopback port.

Used by the pytest fixtures, the demo and the benchmarks, so none needs a
Redis that is already running, and none can touch one that is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis


class RedisServer:
    """A redis-server child process; a context manager that always stops it."""

    def __init__(
        self,
        *,
        appendonly: bool = False,
        binary: str | None = None,
        port: int | None = None,
        directory: str | None = None,
    ):
        found = binary or os.environ.get("DURABLE_REDIS_SERVER") or shutil.which("redis-server")
        if not found:
            raise RuntimeError(
                "redis-server was not found on PATH; install it (apt-get install redis-server, "
                "brew install redis) or set DURABLE_REDIS_SERVER to its path"
            )
        self.binary = found
        self.appendonly = appendonly
        self.port = port or free_port()
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="durable-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []  # more redis-server options (cluster mode, ...)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.directory,
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(Path(self.directory) / "redis.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"redis-server did not start on port {self.port}; "
                        f"see {self.directory}/redis.log"
                    ) from None
                time.sleep(0.02)
            finally:
                client.close()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_url(given: str | None = None, *, appendonly: bool = False) -> Iterator[str]:
    """`given` as it is, else the URL of a private redis-server stopped on exit.

    For a script whose user may name a Redis (an option, an environment
    variable) and that should run without one.
    """
    if given:
        yield given
        return
    with RedisServer(appendonly=appendonly) as server:
        yield server.url
