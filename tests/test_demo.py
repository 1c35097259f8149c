"""The demo, run the way the README tells users to: `python -m example_project.demo`.

It must pass on a machine with nothing but `redis-server` on PATH, so the
Redis URLs are removed from its environment and it starts its own Redis. A
marker in its environment, inherited by every process it starts, shows
whether any of them (worker, pool children, redis-server) outlived it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER_NAME = "CELERY_DURABLE_DEMO_TEST"
DEMO_TIMEOUT = 120

pytestmark = pytest.mark.slow


def processes_with(marker: bytes) -> list[int]:
    """Pids of live processes whose environment holds `marker` (Linux /proc)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")  # empty for a zombie
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if marker in variables:
            found.append(int(environ.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.timeout(DEMO_TIMEOUT + 60)  # let the subprocess deadline fire first
def test_demo_runs_end_to_end_and_leaves_nothing_running():
    token = uuid.uuid4().hex
    marker = f"{MARKER_NAME}={token}".encode()
    env = {k: v for k, v in os.environ.items() if k not in ("DURABLE_REDIS_URL", "REDIS_URL")}
    env[MARKER_NAME] = token
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "example_project.demo"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT,
        )
    finally:
        # Whatever happened, end what the demo left behind: only processes
        # carrying this test's marker, by pid.
        leftovers = processes_with(marker)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):  # it ended by itself meanwhile
                os.kill(pid, signal.SIGKILL)
    out = demo.stdout
    assert demo.returncode == 0, f"exit code {demo.returncode}\n{out}\n{demo.stderr}"
    assert not leftovers, f"processes of the demo still ran after it exited: {leftovers}"

    assert "redis: private redis-server at redis://127.0.0.1:" in out
    assert "celery_durable active: journal at redis://127.0.0.1:" in out
    worker_pid = int(re.search(r"^worker pid (\d+):", out, re.M).group(1))
    assert not Path(f"/proc/{worker_pid}").exists(), "the worker's main process still exists"

    started = re.search(r"order 1001  started run ([0-9a-f]{32})", out).group(1)
    again = re.search(r"started again with the same key: run ([0-9a-f]{32})", out).group(1)
    assert again == started
    assert f"deduplication: order 1001 started 2 times -> 1 run ({started}), executed once" in out

    assert "runs: 4 (3 completed, 1 failed), each as expected" in out
    assert "error     example_project.services.PaymentDeclined: card ending 0002" in out
    assert re.search(r"step\.retrying\s+charge\s+attempt 1\s+GatewayTimeout", out)
    assert "worker stopped with exit code 0" in out
    assert re.search(r"^demo OK in [\d.]+ s$", out, re.M)
