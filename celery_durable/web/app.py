"""The ASGI app: the JSON API under /api/, webhook URLs under /hooks/, the page at /.

Every endpoint calls the same functions as the CLI and answers the JSON that
`--json` prints. Redis is reached with the blocking client in Starlette's
thread pool, so a slow call holds one thread, not the event loop.

Bad input is answered early with 400 and a message naming the parameter;
an unknown run or rule with 404; a finished run with 409 (410 for a webhook
URL, which will never work again).

A successful GET's answer is shared for `SHARED_FOR` seconds by every client
asking the same URL, and forgotten at the first change made through the
server: fifty open dashboards cost Redis what one does, so watching the
workers does not slow them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..cli_support import _first_line
from ..errors import (
    ConfigurationError,
    DurableError,
    EncodingError,
    RunFinishedError,
    RunNotFoundError,
)
from ..extension import DurableExtension, extension_for
from ..workflows.webhooks import BadSignatureError, deliver_hook
from . import rule_editing
from .auth import Refused, check_change
from .responses import BadRequest, json_body, json_response

STATIC = Path(__file__).parent / "static"
# Ids the journal gives (hex, uuids) and rule names fit easily; anything else is a typo.
_RUN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
SHARED_FOR = 1.0  # seconds a GET's answer is shared by the clients asking the same URL
SHARED_MAX = 1000  # answers kept at most; past it, all are forgotten

Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _answer_errors(fn: Handler) -> Handler:
    """One place that turns what went wrong into a status and one message."""

    async def handler(request: Request) -> Response:
        try:
            return await fn(request)
        except Refused as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            response = _error(exc.status, exc.message)
            if headers:
                response.headers.update(headers)
            return response
        except BadRequest as exc:
            return _error(400, str(exc))
        except rule_editing.YamlProblems as exc:
            return json_response({"error": str(exc), "problems": exc.problems}, 400)
        except BadSignatureError as exc:
            return _error(403, str(exc))
        except RunNotFoundError as exc:
            return _error(404, _first_line(exc))
        except RunFinishedError as exc:
            gone = request.url.path.startswith("/hooks/")
            return _error(410 if gone else 409, _first_line(exc))
        except redis.RedisError as exc:
            return _error(503, f"the journal's Redis did not answer: {_first_line(exc)}")
        except (ConfigurationError, EncodingError, ValueError) as exc:
            problems = getattr(exc, "problems", None)
            if problems:  # RulesError: every problem
                return json_response({"error": _first_line(exc), "problems": problems}, 400)
            message = _first_line(exc)
            return _error(404 if message.startswith("no rule named") else 400, message)
        except DurableError as exc:
            return _error(409, _first_line(exc))

    return handler


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}, got {value}")
    return value


def _id(value: str, what: str) -> str:
    if not _RUN_ID.match(value):
        raise BadRequest(f"{what}: {value[:80]!r} is not a valid id")
    return value


class SharedAnswers:
    """GET answers by URL for `SHARED_FOR` seconds; a change forgets them all."""

    def __init__(self, seconds: float = SHARED_FOR) -> None:
        self.seconds = seconds
        self.answers: dict[str, tuple[float, Response]] = {}

    def wrap(self, fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            key = str(request.url.path) + "?" + str(request.url.query)
            now = time.monotonic()
            found = self.answers.get(key)
            if found is not None and found[0] > now:
                return found[1]
            response = await fn(request)
            if response.status_code == 200:
                if len(self.answers) >= SHARED_MAX:
                    self.answers.clear()
                self.answers[key] = (now + self.seconds, response)
            return response

        return handler

    def forget(self, fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            response = await fn(request)
            if response.status_code < 400:
                self.answers.clear()
            return response

        return handler


class Api:
    """The endpoints, bound to one Celery app and one token."""

    def __init__(self, celery_app: Celery, token: str | None):
        self.app = celery_app
        self.ext: DurableExtension = extension_for(celery_app)
        self.token = token or None  # "" is no token: changes from loopback only

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(partial(fn, *args, **kwargs))

    # -- runs -------------------------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        from ..workflows.listing import list_runs
        from ..workflows.stuck import list_stuck

        params = request.query_params
        limit = _int(request, "limit", 50, 1, 1000)
        cursor = params.get("cursor") or None
        status = params.get("status") or None
        if status == "stuck":
            found, next_cursor = await self.call(
                list_stuck, limit=limit, cursor=cursor, app=self.app
            )
        else:
            found, next_cursor = await self.call(
                list_runs,
                workflow=params.get("workflow") or None,
                status=status,
                limit=limit,
                cursor=cursor,
                app=self.app,
            )
        return json_response({"runs": found, "next_cursor": next_cursor})

    async def run(self, request: Request) -> Response:
        from ..workflows.listing import describe_run

        run_id = _id(request.path_params["run_id"], "run id")
        limit = _int(request, "limit", 200, 1, 1000)
        cursor = request.query_params.get("cursor") or None
        return json_response(
            await self.call(describe_run, run_id, limit=limit, cursor=cursor, app=self.app)
        )

    async def cancel(self, request: Request) -> Response:
        from ..workflows.control import cancel_run

        check_change(request, self.token)
        run_id = _id(request.path_params["run_id"], "run id")
        cancelled = await self.call(cancel_run, run_id, app=self.app)
        return json_response({"run": run_id, "cancelled": cancelled})

    async def send_event(self, request: Request) -> Response:
        from ..workflows.control import send_event

        check_change(request, self.token)
        run_id = _id(request.path_params["run_id"], "run id")
        name = request.path_params["name"]
        payload = await json_body(request)
        await self.call(send_event, run_id, name, payload, app=self.app)
        return json_response({"run": run_id, "event": name, "delivered": True}, 202)

    async def hook(self, request: Request) -> Response:
        """A webhook URL from `webhook_url()`: its signature is the only credential."""
        run_id = _id(request.path_params["run_id"], "run id")
        name = request.path_params["name"]
        nonce = request.query_params.get("n", "")
        signature = request.query_params.get("sig", "")
        if not nonce or not signature:
            raise BadSignatureError("the webhook URL lacks its n= or sig= parameter")
        payload = await json_body(request)
        delivered = await self.call(deliver_hook, self.ext, run_id, name, nonce, signature, payload)
        if delivered:
            return json_response({"run": run_id, "event": name, "delivered": True}, 202)
        return json_response({"run": run_id, "event": name, "delivered": False, "repeat": True})

    # -- rules ------------------------------------------------------------------------

    async def rules(self, request: Request) -> Response:
        from ..rules.api import list_rules

        return json_response(await self.call(list_rules, app=self.app))

    async def rule_history(self, request: Request) -> Response:
        from ..rules.api import rule_history

        name = request.path_params["name"]
        limit = _int(request, "limit", 20, 1, 1000)
        cursor = request.query_params.get("cursor") or None
        if cursor is not None and not re.match(r"^\d+-\d+$", cursor):
            raise BadRequest(f"cursor: {cursor[:80]!r} is not one a listing gave")
        entries = await self.call(rule_history, name, limit=limit, before=cursor, app=self.app)
        next_cursor = entries[-1]["id"] if len(entries) == limit else None
        return json_response({"history": entries, "next_cursor": next_cursor})

    async def rule_test(self, request: Request) -> Response:
        """Dry run: `{"event": {...}}` or `{"task_id": "..."}`. Changes nothing, so no token."""
        from ..rules.dry_run import dry_run

        name = request.path_params["name"]
        body = await json_body(request)
        if not isinstance(body, dict) or ("event" in body) == ("task_id" in body):
            raise BadRequest('give a JSON object with either "event" or "task_id"')
        event, task_id = body.get("event"), body.get("task_id")
        if event is not None and not isinstance(event, dict):
            raise BadRequest('"event" must be an object such as {"type": ..., "data": {...}}')
        if task_id is not None:
            task_id = _id(str(task_id), "task_id")
        try:
            report = await self.call(dry_run, name, event, task_id=task_id, app=self.app)
        except (TypeError, AttributeError, KeyError) as exc:  # a hand-written event's shape
            raise BadRequest(
                f"the event does not have the shape of a real one ({type(exc).__name__}: "
                f"{_first_line(exc)}); compare with a past task's id"
            ) from None
        return json_response(report.as_dict())

    async def rule_notify_test(self, request: Request) -> Response:
        from ..rules.dry_run import send_test_notification

        check_change(request, self.token)
        results = await self.call(send_test_notification, request.path_params["name"], app=self.app)
        return json_response({"results": results})

    async def rule_enabled(self, request: Request) -> Response:
        """`{"enabled": true|false|null}`: switch on, off, or back to what the rule says."""
        from ..rules.api import set_rule_enabled

        check_change(request, self.token)
        body = await json_body(request)
        if not isinstance(body, dict) or body.get("enabled", 0) not in (True, False, None):
            raise BadRequest('give {"enabled": true}, {"enabled": false} or {"enabled": null}')
        name = request.path_params["name"]
        await self.call(set_rule_enabled, name, body["enabled"], app=self.app)
        return json_response({"rule": name, "switch": body["enabled"]})

    async def rule_reset_breaker(self, request: Request) -> Response:
        from ..rules.api import reset_breaker

        check_change(request, self.token)
        name = request.path_params["name"]
        await self.call(reset_breaker, name, app=self.app)
        return json_response({"rule": name, "breaker": "closed"})

    async def retry_chain(self, request: Request) -> Response:
        from ..rules.api import retry_chain

        task_id = _id(request.path_params["task_id"], "task id")
        return json_response({"chain": await self.call(retry_chain, task_id, app=self.app)})

    # -- workers ----------------------------------------------------------------------

    async def workers(self, request: Request) -> Response:
        from ..workflows.listing import list_workers

        return json_response(await self.call(list_workers, app=self.app))


async def _page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _not_found(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith(("/api/", "/hooks/")):
        return _error(404, f"no such endpoint: {request.method} {request.url.path}")
    return Response("not found", status_code=404, media_type="text/plain")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return _error(405, f"{request.method} is not allowed on {request.url.path}")


def create_app(
    celery_app: Celery, *, token: str | None = None, shared_for: float = SHARED_FOR
) -> Starlette:
    """The web app for `celery_app`; `token` defaults to `durable_web_token`.

    `shared_for`: seconds a GET's answer is shared by clients asking the same URL.
    """
    api = Api(
        celery_app, token if token is not None else extension_for(celery_app).settings.web_token
    )

    shared = SharedAnswers(shared_for)

    def route(path: str, endpoint: Handler, method: str = "GET") -> Route:
        handler = _answer_errors(endpoint)
        handler = shared.wrap(handler) if method == "GET" else shared.forget(handler)
        return Route(path, handler, methods=[method])

    routes = [
        route("/api/runs", api.runs),
        route("/api/runs/{run_id}", api.run),
        route("/api/runs/{run_id}/cancel", api.cancel, "POST"),
        route("/api/runs/{run_id}/events/{name}", api.send_event, "POST"),
        route("/api/rules", api.rules),
        route("/api/rules", partial(rule_editing.save, api), "POST"),
        route("/api/rules/validate", partial(rule_editing.validate, api), "POST"),
        route("/api/rules/try", partial(rule_editing.try_draft, api), "POST"),
        route("/api/rules/{name}", partial(rule_editing.delete, api), "DELETE"),
        route("/api/rules/{name}/yaml", partial(rule_editing.source, api)),
        route("/api/rules/{name}/history", api.rule_history),
        route("/api/rules/{name}/test", api.rule_test, "POST"),
        route("/api/rules/{name}/notify-test", api.rule_notify_test, "POST"),
        route("/api/rules/{name}/enabled", api.rule_enabled, "POST"),
        route("/api/rules/{name}/reset-breaker", api.rule_reset_breaker, "POST"),
        route("/api/tasks/{task_id}/retry-chain", api.retry_chain),
        route("/api/workers", api.workers),
        route("/hooks/{run_id}/{name}", api.hook, "POST"),
        Route("/", _page),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={404: _not_found, 405: _method_not_allowed},
    )
