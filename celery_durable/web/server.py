"""Serving the web app with uvicorn: in the foreground (the CLI) or in a thread (tests).

Without `durable_web_token` the server refuses an address that is not
loopback: anyone who could reach it could cancel runs.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from celery import Celery

from ..errors import ConfigurationError
from ..extension import extension_for
from .app import create_app
from .auth import is_loopback


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address when no token guards the changes."""
    if token:
        return
    if _loopback(host):
        return
    raise ConfigurationError(
        f"refusing to serve on {host!r} without durable_web_token: anyone who reaches it "
        "could cancel runs and send events. Set durable_web_token in the app's config, or "
        "serve on 127.0.0.1 behind a proxy that authenticates"
    )


def _loopback(host: str) -> bool:
    if is_loopback(host):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name such as 0.0.0.0's aliases or a public DNS name


def make_server(
    celery_app: Celery, host: str, port: int, *, token: str | None = None, **options: Any
) -> uvicorn.Server:
    """A uvicorn server for the app; `token` ("" for none) overrides `durable_web_token`."""
    token = (token if token is not None else extension_for(celery_app).settings.web_token) or None
    check_bind(host, token)
    config = uvicorn.Config(
        create_app(celery_app, token=token or "", **options),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=True,
        lifespan="off",
    )
    return uvicorn.Server(config)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(
    celery_app: Celery,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    **options: Any,
) -> Iterator[str]:
    """Run the server in a thread for tests and benchmarks; yields its base URL.

    uvicorn leaves signals alone outside the main thread, so the host's stay as they are.
    """
    port = port or free_port()
    server = make_server(celery_app, host, port, token=token, **options)
    thread = threading.Thread(target=server.run, name="durable-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the web server did not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
