"""Real `celery worker` subprocesses, for tests, demos and benchmarks.

An in-process worker (`celery.contrib.testing`, the `durable_worker` fixture)
cannot be killed with -9, restarted, or run beside a second one: what
celery_durable promises about dying workers, warm shutdowns and competing
workers can only be seen with real processes. `WorkerProcess` is one
`python -m celery -A <app> worker --pool prefork`:

- in its own session, so its process group (pgid == pid) reaches the pool
  children too, even when the main process is gone;
- logging to a file, whose tail goes into every error;
- ready (`wait_ready()`) once its log holds celery_durable's line
  ``celery_durable active: journal at ...`` and it answers a ping, within a
  deadline;
- stopped warmly (`stop()`: SIGTERM, then SIGKILL of the group past a
  deadline) or killed (`kill()`: SIGKILL, as a crash; `kill_pool_child()`);
- always killed at interpreter exit, even after an interrupted session.

`WorkerProcesses` starts any number of them on one broker and kills every one
it started when it closes; the pytest fixture `durable_worker_processes` is
one per test.

PID 1 of some containers does not reap orphans: a pool child that outlives a
killed main process stays a zombie forever. Zombies run nothing, so every
"is it still running" check here ignores them. Processes are read from
/proc, or from `ps` where there is no /proc.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TypedDict, Unpack

from celery import Celery

__all__ = [
    "READY_LINE",
    "STOP_TIMEOUT",
    "WorkerOptions",
    "WorkerProcess",
    "WorkerProcessError",
    "WorkerProcesses",
    "children_of",
    "group_members",
]

READY_LINE = "celery_durable active: journal at "
"""What celery_durable's bootstep logs (at INFO) before the worker consumes."""

STOP_TIMEOUT = 40.0
"""Seconds `stop()` allows a warm shutdown before it kills the worker. A warm
shutdown lets the running tasks finish, joins every pool process (billiard),
and gives celery_durable's threads up to 10 s when it begins and 5 s once the
pool has drained; on a loaded machine that approaches half a minute, and a
tighter deadline fails a test for a worker that was stopping as it should."""

_numbers = itertools.count(1)
_live: weakref.WeakSet[WorkerProcess] = weakref.WeakSet()

PathLike = str | os.PathLike[str]


class WorkerOptions(TypedDict, total=False):
    """Options of `WorkerProcess` that `WorkerProcesses` passes on (see its docstring)."""

    app: str
    env: Mapping[str, str] | None
    extra_args: Sequence[str]
    url_env: str | None
    cwd: PathLike | None
    loglevel: str
    ready_line: str | None


class WorkerProcessError(RuntimeError):
    """A worker did not start, stop or die as asked; the message ends with its log's tail."""


class WorkerProcess:
    """One `celery worker` subprocess; `with WorkerProcess(...) as w:` kills it on exit.

    `broker_url` is where pings go. The worker's app finds its own broker:
    name the environment variable it reads in `url_env` and it is set to
    `broker_url`. `cwd` (default: the current directory) is where the worker
    runs and what it imports `app` from. `ready_line=None` (a plain Celery
    app, or a log level above INFO) waits for the ping alone.
    """

    def __init__(
        self,
        broker_url: str,
        log_path: PathLike,
        *,
        app: str,
        concurrency: int = 1,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        url_env: str | None = None,
        cwd: PathLike | None = None,
        loglevel: str = "info",
        ready_line: str | None = READY_LINE,
    ):
        self.broker_url = broker_url
        self.log_path = Path(log_path)
        self.app = app
        self.concurrency = concurrency
        # Unique, so that a ping reaches this worker and no other one.
        name = name or f"w{next(_numbers)}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.hostname = name if "@" in name else f"{name}@{socket.gethostname()}"
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.url_env = url_env
        self.cwd = Path(cwd) if cwd is not None else Path.cwd()
        self.loglevel = loglevel
        self.ready_line = ready_line
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0  # where this run's lines begin in a log file that was reused

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"<WorkerProcess {self.hostname} pid={pid}>"

    # -- starting ------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(self.concurrency),
            "--hostname",
            self.hostname,
            "-l",
            self.loglevel,
            # Workers started here are told apart by name; waiting for peers at
            # startup (mingle) and gossiping about them only slow them down.
            "--without-mingle",
            "--without-gossip",
            *self.extra_args,
        ]

    def start(self) -> WorkerProcess:
        """Start the process and return at once; `wait_ready()` waits for it."""
        if self.process is not None:
            raise WorkerProcessError(f"{self} was already started")
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(self.cwd), os.environ.get("PYTHONPATH")) if p
            ),
            **({self.url_env: self.broker_url} if self.url_env else {}),
            **self.env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: pgid == pid
        )
        _live.add(self)
        return self

    def wait_ready(self, control: Celery | None = None, timeout: float = 30.0) -> str:
        """Wait until the log holds `ready_line` and the worker answers a ping.

        Returns the log line from `ready_line` on ("" without one). `control`
        is an app on the same broker to ping through (one is made if None).
        """
        own_control = control is None
        if control is None:
            control = Celery("worker-process-control", broker=self.broker_url, set_as_current=False)
        deadline = time.monotonic() + timeout
        try:
            while True:
                code = self.returncode
                if code is not None:
                    raise WorkerProcessError(
                        f"{self} exited with code {code} before it was ready\n{self.tail()}"
                    )
                line = self._ready_text()
                if line is not None and control.control.ping(
                    destination=[self.hostname], timeout=0.25, limit=1
                ):
                    return line
                if time.monotonic() > deadline:
                    what = (
                        "answer a ping"
                        if line is not None
                        else f"log {self.ready_line!r} (is celery_durable installed on {self.app}?)"
                    )
                    raise WorkerProcessError(
                        f"{self} did not {what} within {timeout:g}s\n{self.tail()}"
                    )
                if line is None:
                    time.sleep(0.05)
        finally:
            if own_control:
                control.close()

    def _ready_text(self) -> str | None:
        if self.ready_line is None:
            return ""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None
        at = text.find(self.ready_line)
        if at < 0:
            return None
        return text[at:].split("\n", 1)[0].rstrip()

    # -- looking at it ---------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.process is None:
            raise WorkerProcessError(f"{self} was not started")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    def is_alive(self) -> bool:
        """Whether the main process runs (not exited, not a zombie)."""
        return self.process is not None and self.process.poll() is None

    def pool_pids(self) -> list[int]:
        """The pids of the main process's live children (its prefork pool)."""
        return children_of(self.pid)

    def group_pids(self) -> list[int]:
        """Every live (non-zombie) process of the worker's group: main, pool, orphans."""
        return group_members(self.pid) if self.process is not None else []

    def is_running(self) -> bool:
        """Whether any process of the worker (main or pool child) still runs."""
        return bool(self.group_pids())

    def log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()

    def tail(self, lines: int = 40) -> str:
        body = "\n".join(f"    {line}" for line in self.log_lines()[-lines:])
        return f"last lines of {self.hostname}'s log ({self.log_path}):\n{body}"

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline:
                raise WorkerProcessError(f"{self} did not log {text!r} in {timeout:g}s")
            time.sleep(0.05)

    # -- stopping ----------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Warm shutdown: SIGTERM, wait `timeout`; then SIGKILL the group. The exit code."""
        self.terminate()
        return self.wait_stopped(timeout)

    def terminate(self) -> None:
        """Send SIGTERM (warm shutdown) without waiting; see `wait_stopped()`."""
        if self.process is not None and self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Wait for the main process to exit; past `timeout`, SIGKILL the whole group."""
        if self.process is None:
            return None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(children=True)
            raise WorkerProcessError(
                f"{self} did not stop within {timeout:g}s of SIGTERM; killed it\n{self.tail()}"
            ) from None
        # Whatever the main process left behind (it should have reaped its pool).
        self._kill_group_and_wait()
        self._close_log()
        return self.process.returncode

    def kill(self, *, children: bool = False, timeout: float = 10.0) -> None:
        """SIGKILL the main process (and with `children`, its whole group); reap it.

        Without `children`, pool children are left as they are (orphans), as
        after a real crash of the main process; `close()` still kills them.
        """
        if self.process is None:
            return
        if children:
            _killpg(self.pid)
        elif self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.process.wait(timeout)
        if children:
            _wait_group_gone(self.pid, timeout)

    def kill_pool_child(self, pid: int | None = None, timeout: float = 10.0) -> int:
        """SIGKILL one pool child (the first one if `pid` is None); its pid once it is gone."""
        pids = self.pool_pids()
        if pid is None:
            if not pids:
                raise WorkerProcessError(f"{self} has no pool child to kill")
            pid = pids[0]
        elif pid not in pids:
            raise WorkerProcessError(f"{pid} is not a pool child of {self} ({pids})")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise WorkerProcessError(f"pool child {pid} of {self} survived SIGKILL")
            time.sleep(0.02)
        return pid

    def close(self, timeout: float = 10.0) -> None:
        """Kill whatever of this worker still runs; never raises for a clean worker."""
        if self.process is not None:
            if self.process.poll() is None:
                _killpg(self.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout)
            self._kill_group_and_wait(timeout)
        self._close_log()
        _live.discard(self)

    def _kill_group_and_wait(self, timeout: float = 10.0) -> None:
        if group_members(self.pid):
            _killpg(self.pid)
        _wait_group_gone(self.pid, timeout)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class WorkerProcesses:
    """Starts workers on one broker; `close()` (or leaving `with`) kills all of them.

    `defaults` are options of `WorkerProcess` for every worker (`app`,
    `url_env`, `cwd`, ...); `start()` may override them. At most
    `max_running` workers may run at once, so that a test cannot overload a
    small machine by mistake.
    """

    def __init__(
        self,
        broker_url: str,
        log_dir: PathLike,
        *,
        max_running: int = 3,
        **defaults: Unpack[WorkerOptions],
    ):
        self.broker_url = broker_url
        self.log_dir = Path(log_dir)
        self.max_running = max_running
        self.defaults = defaults
        #: Environment variables for every worker started from now on (a test may add some).
        self.env: dict[str, str] = dict(defaults.get("env") or {})
        self.workers: list[WorkerProcess] = []
        self._control: Celery | None = None

    @property
    def control(self) -> Celery:
        """A bare Celery app on the same broker, for pings (no celery_durable)."""
        if self._control is None:
            self._control = Celery(
                "worker-processes-control", broker=self.broker_url, set_as_current=False
            )
        return self._control

    def start(
        self,
        concurrency: int = 1,
        *,
        wait: bool = True,
        timeout: float = 30.0,
        name: str | None = None,
        **options: Unpack[WorkerOptions],
    ) -> WorkerProcess:
        """Start one worker; with `wait`, return once it is ready."""
        names = [name] if name else None
        (worker,) = self.start_many(
            1, concurrency, wait=wait, timeout=timeout, names=names, **options
        )
        return worker

    def start_many(
        self,
        count: int,
        concurrency: int = 1,
        *,
        wait: bool = True,
        timeout: float = 30.0,
        names: Sequence[str] | None = None,
        **options: Unpack[WorkerOptions],
    ) -> list[WorkerProcess]:
        """Start `count` workers at once, then wait (one deadline) until all are ready."""
        merged: WorkerOptions = {**self.defaults, **options}
        merged["env"] = {**self.env, **(options.get("env") or {})}
        if not merged.get("app"):
            raise WorkerProcessError(
                "no app to start: give app='myproject.celery' here or to WorkerProcesses "
                "(with pytest, override the durable_worker_processes_options fixture)"
            )
        running = len(self.running())
        if running + count > self.max_running:
            raise WorkerProcessError(
                f"{count} more worker(s) would make {running + count} running, "
                f"over max_running={self.max_running}"
            )
        started = []
        for index in range(count):
            number = len(self.workers) + 1
            name = names[index] if names else None
            worker = WorkerProcess(
                self.broker_url,
                self.log_dir / f"worker-{number}.log",
                concurrency=concurrency,
                name=name or f"w{number}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                **merged,
            )
            self.workers.append(worker)
            started.append(worker.start())
        if wait:
            deadline = time.monotonic() + timeout
            for worker in started:
                worker.wait_ready(self.control, max(0.5, deadline - time.monotonic()))
        return started

    def running(self) -> list[WorkerProcess]:
        """Workers with any process (main or pool child) still running."""
        return [w for w in self.workers if w.is_running()]

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """Warm shutdown of every running worker at once (SIGTERM), one deadline for all."""
        alive = [w for w in self.workers if w.is_alive()]
        for worker in alive:
            worker.terminate()
        deadline = time.monotonic() + timeout
        for worker in alive:
            worker.wait_stopped(max(0.5, deadline - time.monotonic()))

    def tails(self, lines: int = 40) -> str:
        return "\n".join(w.tail(lines) for w in self.workers)

    def close(self) -> None:
        """Kill every process that any started worker left, and wait until they are gone."""
        errors = []
        for worker in self.workers:
            try:
                worker.close()
            except Exception as exc:  # go on with the others; report at the end
                errors.append(f"{worker}: {exc!r}")
        if self._control is not None:
            self._control.close()
            self._control = None
        if errors:
            raise WorkerProcessError("could not kill every worker: " + "; ".join(errors))

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- processes, through /proc (or ps) --------------------------------------------------


def _processes() -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, ppid, pgid) of every process; state "Z" for a zombie."""
    proc = Path("/proc")
    if not proc.is_dir():
        yield from _processes_from_ps()
        return
    for entry in proc.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields is not None:
                yield int(entry.name), fields[0], int(fields[1]), int(fields[2])


def _processes_from_ps() -> Iterator[tuple[int, str, int, int]]:
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,stat=,ppid=,pgid="], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        pid, state, ppid, pgid = line.split()
        yield int(pid), state[0], int(ppid), int(pgid)


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command: state, ppid, pgrp, ...; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    return text.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    if Path("/proc").is_dir():
        fields = _stat_fields(pid)
        return fields is not None and fields[0] != "Z"
    return any(p == pid and state != "Z" for p, state, _, _ in _processes_from_ps())


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) children of `pid`."""
    found: set[int] = set()
    # /proc/<pid>/task/*/children is one read, where the kernel has it.
    task_files = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if task_files:
        for path in task_files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in path.read_text().split())
        return sorted(p for p in found if _alive(p))
    return sorted(p for p, state, ppid, _ in _processes() if ppid == pid and state != "Z")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    return sorted(p for p, state, _, group in _processes() if group == pgid and state != "Z")


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group ended by itself meanwhile
        os.killpg(pgid, signal.SIGKILL)


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            raise WorkerProcessError(
                f"processes {group_members(pgid)} of worker group {pgid} are still running"
            )
        _killpg(pgid)
        time.sleep(0.05)


@atexit.register
def _kill_leftovers() -> None:
    """A last resort if a session ends without teardown (an interrupted run)."""
    for worker in list(_live):
        with contextlib.suppress(Exception):
            if worker.process is not None:
                _killpg(worker.pid)
