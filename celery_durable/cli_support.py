"""What every `celery -A app durable ...` command shares: the app, one-line
errors, `--json`, tables, paging.

Its own module so that the command groups kept apart from `cli.py`
(`schedules/cli.py`) use it without importing the module that adds them to
the `durable` group.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import Any

import click
import redis
from celery import Celery

from .errors import DurableError

# A command answers a person: a Redis that does not answer within this many
# seconds is reported at once, not retried for half a minute like a worker's.
CONNECT_TIMEOUT = 3.0


def _app(ctx: click.Context) -> Celery:
    """The app `-A` named: Celery's root command keeps it in `ctx.obj.app` (a CLIContext)."""
    obj = ctx.find_root().obj
    app = getattr(obj, "app", None)
    if app is None:
        raise click.ClickException("no Celery app: run it as `celery -A yourapp durable ...`")
    return app


def pass_app(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every command's one wrapper: `fn(app, ...)` with the app, errors as one line."""

    @click.pass_context
    @_errors_as_one_line
    @wraps(fn)
    def command(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        return fn(_app(ctx), *args, **kwargs)

    return command


def _errors_as_one_line(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The CLI's one error handler: what goes wrong is one line and a non-zero exit.

    Before the command runs, its journal's Redis must answer a ping within
    `CONNECT_TIMEOUT` (with no retries), so an unreachable Redis is one line
    in seconds. Rule problems are listed one per line: each names its rule
    and field, and a user needs them all.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _check_redis(_app(click.get_current_context()))
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise click.ClickException(_redis_problem(exc)) from None
        except (DurableError, ValueError) as exc:
            if getattr(exc, "problems", None):  # RulesError: every problem, one per line
                raise click.ClickException(str(exc)) from None
            raise click.ClickException(_first_line(exc)) from None

    return wrapper


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _check_redis(app: Any) -> None:
    """Ping the journal's Redis once, with a short timeout and no retry."""
    from .extension import extension_for

    ext = extension_for(app)
    settings = ext.settings
    if settings.redis_url.startswith("sentinel://") or settings.redis_cluster:
        return  # their clients find the server through others: let them
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise click.ClickException(
            f"cannot reach the journal's Redis at {ext.safe_redis_url}: {_first_line(exc)}"
        ) from None
    finally:
        client.close()


def _redis_problem(exc: redis.RedisError) -> str:
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"lost the journal's Redis: {_first_line(exc)}"
    return f"Redis refused a command: {_first_line(exc)}"


_STREAM_ID = re.compile(r"^\d+-\d+$")


def _history_cursor(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A rule history cursor is an entry id (`1712345678901-0`) a previous page printed."""
    if value is None:
        return None
    if not _STREAM_ID.match(value) or value == "0-0":
        # One line, like every other error here (BadParameter would add the usage).
        raise click.ClickException(f"invalid cursor {value!r}: pass back the one a listing gave")
    return value


def _json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=_jsonable, sort_keys=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return repr(value)


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _next_page(cursor: str | None) -> None:
    if cursor:
        click.echo(f"\nmore: --cursor {cursor}")
