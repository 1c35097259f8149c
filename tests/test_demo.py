"""The demo, run the way the README tells users to: `python -m example_project.demo`.

It must pass on a machine with nothing but `redis-server` on PATH, so the
Redis URLs are removed from its environment and it starts its own Redis. A
marker in its environment, inherited by every process it starts, shows
whether any of them (worker, pool children, redis-server) outlived it.

Its output must show the whole product: durable sleeps and an approval event
(in the runs' timelines as `celery ... durable runs show` prints them),
automation rules firing (`durable rules history`), the retries one of them
made, the Slack message another one sent (to the demo's local receiver) and
the plugin action.
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
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DURABLE_REDIS_URL", "REDIS_URL", "DEMO_SLACK_URL")
    }
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
    assert f"deduplication: order 1001 started 2 times -> 1 run ({started}), recorded once" in out

    assert "runs: 4 (3 completed, 1 failed), each as expected" in out
    assert "error     example_project.services.PaymentDeclined: card ending 0002" in out
    assert re.search(r"step\.retrying\s+charge\s+attempt 1, .*GatewayTimeout", out)

    # The durable sleep and the approval event, in the runs' timelines.
    for status in ("sleeping", "waiting"):
        assert re.search(rf"order 1001  {status}$", out, re.M)
    assert len(re.findall(r"sleep\.started\s+sleep\s", out)) == 2
    assert len(re.findall(r"event\.waiting\s+approval", out)) == 2
    assert len(re.findall(r"workflow\.suspended\s", out)) == 4  # each slept, then waited
    assert len(re.findall(r"event\.received\s+approval", out)) == 2
    assert '"status": "shipped", "approved_by": "maria (ops)"' in out
    assert (
        "approval: order 1001 approved by maria (ops); order 1002 rejected "
        "(shipping address could not be verified), refunded" in out
    )
    assert '"status": "rejected", "reason": "shipping address could not be verified"' in out

    # The rules fired, from list_rules() and rule_history().
    assert "automation rules: 2 loaded from rules.yaml" in out
    assert "$ celery -A example_project durable rules history" in out
    assert (
        "rules fired: 3 (Retry receipt emails on network errors: 2, "
        "Tell Slack about failed orders: 1), every action succeeded" in out
    )
    assert len(re.findall(r"task\.failed\s+\S+send_receipt_email\s.*retry:ok", out)) == 2

    # The retries the rule made, from retry_chain(): the original and two retries.
    chain = re.findall(r"^\s+\d\. ([0-9a-f-]{32,36})\s+(the original task|retry \d)", out, re.M)
    assert [what for _, what in chain] == ["the original task", "retry 1", "retry 2"]
    assert len({task_id for task_id, _ in chain}) == 3
    assert "retries made: send_receipt_email of order 1001 retried 2 times" in out
    assert "sent on try 3" in out

    # The Slack message, as the demo's local receiver printed it when it came.
    assert re.search(
        r"^  \[slack #shop-alerts [\d:]+\] Shop alerts: .*Order failed: process_order run "
        r"[0-9a-f]{32}: card ending 0002 was declined for order 1003$",
        out,
        re.M,
    )
    assert "slack message received: 1 from rule 'Tell Slack about failed orders'" in out

    # The project's own plugin action (audit_log), used by both rules.
    assert "plugin action ran: audit_log appended 3 lines to example_project:audit" in out
    assert re.search(
        r"\[Retry receipt emails on network errors\] example_project\.tasks\.send_receipt_email "
        r"\S+ failed: mail relay closed the connection .* \(rule retries so far: 1\)$",
        out,
        re.M,
    )
    assert "[Tell Slack about failed orders] told Slack that process_order run" in out

    assert "worker stopped with exit code 0" in out
    took = re.search(r"^demo OK in ([\d.]+) s$", out, re.M)
    assert took, out
    assert float(took.group(1)) < 60, f"the demo took {took.group(1)} s"
