"""`celery -A app durable web [--host 127.0.0.1] [--port 5566]`."""

from __future__ import annotations

import click
from celery import Celery

from ..cli import pass_app


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=5566, show_default=True, type=int, help="Port to serve on.")
@pass_app
def web(app: Celery, host: str, port: int) -> None:
    """Serve the dashboard, the JSON API (/api/) and webhook URLs (/hooks/)."""
    try:
        from .server import make_server
    except ImportError as exc:
        raise click.ClickException(
            f"the web dashboard needs its extra: pip install 'celery-durable[web]' ({exc})"
        ) from None
    server = make_server(app, host, port)
    click.echo(f"celery_durable web on http://{host}:{port}/ (Ctrl-C stops it)")
    server.run()
