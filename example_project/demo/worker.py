"""One `celery -A example_project worker` subprocess, always stopped on exit.

The worker runs in its own session (process group), so that stopping it can
reach its pool children too, even if the main process has to be killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from celery import Celery

from .errors import DemoError

# The directory that holds the example_project package: the worker's cwd, so
# that `-A example_project` imports this very code.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

READY_LINE = "celery_durable active: journal at "


class WorkerProcess:
    """Start with `with WorkerProcess(...) as worker:`; leaving the block stops it."""

    def __init__(
        self,
        redis_url: str,
        log_path: Path,
        *,
        concurrency: int = 2,
        env: dict[str, str] | None = None,
    ):
        self.redis_url = redis_url
        self.log_path = log_path
        self.concurrency = concurrency
        self.extra_env = dict(env or {})  # more environment for the worker (DEMO_SLACK_URL)
        # A name of our own, so that ping asks this worker and no other one.
        self.hostname = f"demo-{os.getpid()}@{socket.gethostname()}"
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise DemoError("the worker was not started")
        return self.process.pid

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "example_project",
            "worker",
            "-l",
            "info",
            "--concurrency",
            str(self.concurrency),
            "--pool",
            "prefork",
            "--hostname",
            self.hostname,
            # A lone worker has no peers to synchronise with at startup; skip the wait.
            "--without-mingle",
        ]

    def start(self) -> None:
        env = {
            **os.environ,
            **self.extra_env,
            "DURABLE_REDIS_URL": self.redis_url,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        }
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(),
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, app: Celery, timeout: float) -> str:
        """Wait until the worker answers a ping; return its celery_durable log line."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll() if self.process else None
            if code is not None:
                raise DemoError(f"the worker exited with code {code} before it was ready")
            if app.control.ping(destination=[self.hostname], timeout=0.25, limit=1):
                break
            if time.monotonic() > deadline:
                raise DemoError(f"the worker did not answer a ping within {timeout:.0f} s")
        # The bootstep logs before the worker consumes, so the line is there by now.
        for line in self.log_lines():
            if READY_LINE in line:
                return line[line.index(READY_LINE) :]
        raise DemoError(
            f"the worker is up but its log has no line containing {READY_LINE!r}: "
            "is celery_durable installed on the app?"
        )

    def log_lines(self) -> list[str]:
        if not self.log_path.exists():
            return []
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (warm shutdown), wait; SIGKILL the whole group past `timeout`."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(self.process.pid)
                    self.process.wait(5.0)
            self.exit_code = self.process.returncode
            # Pool children left by a main process that died: the group names them.
            if _group_alive(self.process.pid):
                _kill_group(self.process.pid)
            _wait_group_gone(self.process.pid, timeout=5.0)
        finally:
            if self._log is not None:
                self._log.close()

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        # Something went wrong while it ran: its log is the first place to look.
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            tail = "\n".join(f"    {line}" for line in self.log_lines()[-30:])
            print(f"last lines of the worker's log ({self.log_path}):\n{tail}", file=sys.stderr)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies awaiting their reaper do not."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True  # no /proc to tell zombies apart: count them as alive
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group ended by itself meanwhile
        os.killpg(pgid, signal.SIGKILL)


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            raise DemoError(f"processes of the worker's group {pgid} are still running")
        time.sleep(0.05)
