"""The journal on Redis Sentinel and on Redis Cluster, real servers started here.

The broker stays a plain Redis (kombu has no cluster transport); the journal,
timers, inboxes, rules and worker records live on the Sentinel-managed
primary, or spread over a three-node cluster, where every multi-key
operation must stay within one hash slot.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_durable
from celery_durable.contrib.redis_server import RedisServer, free_port
from celery_durable.errors import ConfigurationError
from celery_durable.settings import Settings
from tests.steps import arithmetic
from tests.test_suspend import approval, parent

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[RedisServer, int]]:
    with RedisServer() as primary:
        port = free_port()
        config = tmp_path / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor durable-primary 127.0.0.1 {primary.port} 1\n"
        )
        process = subprocess.Popen(
            [primary.binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port)
            yield primary, port
        finally:
            process.terminate()
            process.wait(10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[int]]:
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        pytest.fail("redis-cli is needed to create a cluster (it comes with redis-server)")
    nodes = [RedisServer(directory=str(tmp_path / f"n{i}")) for i in range(3)]
    for node in nodes:
        Path(node.directory).mkdir()
        node.extra_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"{node.directory}/nodes.conf",
            "--cluster-port",
            str(free_port()),  # port + 10000 overflows for high ports
        ]
    try:
        for node in nodes:
            node.start()
        created = subprocess.run(
            [
                redis_cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        client = redis_lib.Redis(port=nodes[0].port)
        deadline = time.monotonic() + 15
        while client.cluster("info").get("cluster_state") != "ok":
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.1)
        client.close()
        yield [n.port for n in nodes]
    finally:
        for node in nodes:
            node.cleanup()


def _wait_for_port(port: int) -> None:
    client = redis_lib.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return
        except redis_lib.ConnectionError:
            assert time.monotonic() < deadline, f"nothing answers on port {port}"
            time.sleep(0.05)
        finally:
            client.close()


def _exercise(app: Celery, durable_wait_for_status) -> None:
    """Steps, a child run, an event wait: the journal's multi-key paths."""
    with start_worker(app, pool="solo", perform_ping_check=False):
        assert celery_durable.start(arithmetic, 20, 1).result(timeout=15)["total"] == 21
        assert celery_durable.start(parent, 4).result(timeout=20) == {"child": 8, "after": "DONE"}
        waiting = celery_durable.start(approval)
        durable_wait_for_status(waiting, "waiting")
        celery_durable.send_event(waiting.id, "approval", {"ok": True, "by": "ops"})
        assert waiting.result(timeout=15) == {"approved": True, "by": "ops"}
        assert celery_durable.list_rules(app)[0]["breaker"]["state"] == "closed"


RULES = [
    {
        "name": "mail",
        "trigger": {"event": "task.failed"},
        "action": {"type": "webhook", "url": "http://127.0.0.1:9/x"},
    }
]


def test_the_journal_on_a_sentinel_managed_primary(
    sentinel, durable_redis_url, durable_wait_for_status
):
    primary, port = sentinel
    app = Celery("sentinel", broker=durable_redis_url, set_as_current=True)
    app.conf.update(
        durable_redis_url=f"sentinel://127.0.0.1:{port}/0",
        durable_redis_sentinel_master="durable-primary",
        durable_rules=RULES,
    )
    celery_durable.install(app)
    _exercise(app, durable_wait_for_status)
    journal = redis_lib.Redis(port=primary.port)
    assert journal.zcard("durable:runs") == 4  # three runs and a child, on the primary
    journal.close()


def test_a_sentinel_url_needs_a_primary_name():
    app = Celery("s", set_as_current=False)
    app.conf.durable_redis_url = "sentinel://127.0.0.1:26379"
    celery_durable.install(app)
    with pytest.raises(ConfigurationError, match="durable_redis_sentinel_master"):
        celery_durable.extension.extension_for(app).redis  # noqa: B018


def test_a_sentinel_broker_is_the_default_journal():
    app = Celery("s", broker="sentinel://a:26379;sentinel://b:26379", set_as_current=False)
    app.conf.broker_transport_options = {"master_name": "main"}
    settings = Settings.from_app(app)
    assert settings.redis_url == "sentinel://a:26379;sentinel://b:26379"
    assert settings.redis_sentinel_master == "main"


def test_the_journal_on_a_redis_cluster(cluster, durable_redis_url, durable_wait_for_status):
    app = Celery("cluster", broker=durable_redis_url, set_as_current=True)
    app.conf.update(
        durable_redis_url=f"redis://127.0.0.1:{cluster[0]}/0",
        durable_redis_cluster=True,
        durable_rules=RULES,
    )
    celery_durable.install(app)
    _exercise(app, durable_wait_for_status)
    spread = [redis_lib.Redis(port=p).dbsize() for p in cluster]
    assert sum(1 for keys in spread if keys) >= 2  # the keys really are spread out
