"""A Redis that refuses celery_durable for good: no retry helps, so nothing retries.

A wrong or missing password, a user without the permissions, a TLS
certificate that does not verify: a worker refuses to start with one line
naming `durable_redis_url` (without its password), and a client call raises
`RedisAccessError` at once. redis-py files `AuthenticationError` under
`ConnectionError`, so before this a worker retried it for ever (never ready,
deaf to SIGTERM) and `get_run()` hung for 11 minutes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery, current_app

import celery_durable
from celery_durable.contrib.redis_server import RedisServer, free_port
from celery_durable.errors import DurableError, RedisAccessError
from celery_durable.extension import extension_for
from tests.apps import faulty
from tests.worker_processes import WorkerProcesses

PASSWORD = "s3cret-pw"
FAST = 3.0  # seconds: a refusal is immediate, nothing near redis-py's retries


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that requires a password (set once it answers, so it can start)."""
    server = RedisServer(directory=str(tmp_path))
    server.start()
    redis_lib.Redis(port=server.port).config_set("requirepass", PASSWORD)
    try:
        yield server
    finally:
        server.stop()


def _client(url: str) -> Iterator[Celery]:
    previous = current_app._get_current_object()
    app = faulty.make_app(url, main="faults-access-client")
    app.set_current()
    yield app
    extension_for(app).redis.close()
    app.close()
    previous.set_current()


def _refused_quickly(call, match: str) -> RedisAccessError:
    began = time.monotonic()
    with pytest.raises(RedisAccessError, match=match) as caught:
        call()
    assert time.monotonic() - began < FAST
    assert isinstance(caught.value, DurableError)
    return caught.value


def test_a_client_without_the_password_is_refused_at_once(locked_redis):
    for _ in _client(locked_redis.url):
        error = _refused_quickly(
            lambda: celery_durable.get_run("anything"), r"authentication failed"
        )
        assert f"durable_redis_url redis://127.0.0.1:{locked_redis.port}/0" in str(error)
        assert "PASSWORD@host" in str(error)  # what to do
        _refused_quickly(lambda: celery_durable.start(faulty.steps, 1), "authentication")


def test_a_wrong_password_is_refused_at_once_and_not_shown(locked_redis):
    url = f"redis://:wrong-{PASSWORD}@127.0.0.1:{locked_redis.port}/0"
    for _ in _client(url):
        error = _refused_quickly(lambda: celery_durable.get_run("x"), "authentication failed")
        assert "redis://:**@127.0.0.1" in str(error)
        assert PASSWORD not in str(error)


def test_a_user_without_permissions_is_refused_at_once(locked_redis):
    admin = redis_lib.Redis(port=locked_redis.port, password=PASSWORD)
    admin.acl_setuser(
        "reader", enabled=True, passwords=["+readpw"], keys=["*"], commands=["+@read"]
    )
    url = f"redis://reader:readpw@127.0.0.1:{locked_redis.port}/0"
    for _ in _client(url):
        _refused_quickly(lambda: celery_durable.start(faulty.steps, 1), "may not do what")
    admin.close()


@pytest.mark.slow
def test_a_worker_without_the_password_refuses_to_start_in_one_line(locked_redis, tmp_path):
    workers = WorkerProcesses(locked_redis.url, tmp_path / "workers", app="tests.apps.faulty")
    try:
        worker = workers.start(wait=False)
        began = time.monotonic()
        worker.wait_stopped(timeout=30)  # before the fix: never ready, still running
        assert time.monotonic() - began < 20
        assert worker.returncode != 0
        log = worker.log_text()
        (line,) = [line for line in log.splitlines() if "celery_durable cannot start" in line]
        assert "CRITICAL" in line and "authentication failed" in line
        assert f"redis://127.0.0.1:{locked_redis.port}/0" in line
        assert "Traceback" not in log
    finally:
        workers.close()


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int]]:
    """A redis-server with a TLS port whose self-signed certificate no client trusts."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subject = ("-subj", "/CN=localhost", "-days", "1", "-nodes")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            *subject,
        ],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    server = RedisServer(directory=str(tmp_path))
    server.extra_args = [
        *("--tls-port", str(tls_port), "--tls-cert-file", str(cert)),
        *("--tls-key-file", str(key), "--tls-auth-clients", "no"),
    ]
    try:
        server.start()
    except RuntimeError:
        pytest.skip("this redis-server was built without TLS")
    try:
        yield server, tls_port
    finally:
        server.stop()


def test_a_certificate_that_does_not_verify_is_refused_at_once(tls_redis):
    _, tls_port = tls_redis
    for _ in _client(f"rediss://127.0.0.1:{tls_port}/0"):
        _refused_quickly(lambda: celery_durable.get_run("x"), "TLS failed .*CERTIFICATE_VERIFY")
