"""What `celery -A app durable web` runs (the command itself is in `cli.py`)."""

from __future__ import annotations

import click
from celery import Celery


def serve(app: Celery, host: str, port: int) -> None:
    """Serve until Ctrl-C; a missing `web` extra is one line saying what to install."""
    try:
        from .server import make_server
    except ImportError as exc:
        raise click.ClickException(
            f"the web dashboard needs its extra: pip install 'celery-durable[web]' ({exc})"
        ) from None
    server = make_server(app, host, port)
    click.echo(f"celery_durable web on http://{host}:{port}/ (Ctrl-C stops it)")
    server.run()
