"""What the API answers with, and how it reads a body: shared by every endpoint.

Kept apart from `app.py` so the rule editor's endpoints use the same JSON
encoder and the same body bounds without importing the app that routes to them.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..cli_support import _jsonable

MAX_BODY = 2 * 1024 * 1024  # bytes of a JSON body; payloads are bounded again when encoded


class BadRequest(Exception):
    """400: the message names the parameter and what it should be."""


def json_response(value: Any, status: int = 200) -> Response:
    """The CLI's JSON (`--json`): the same encoder, so both say the same."""
    return Response(
        json.dumps(value, default=_jsonable),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def json_body(request: Request) -> Any:
    """The body as JSON; an empty body is null."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise BadRequest(f"the body is {len(body):,} bytes; at most {MAX_BODY:,} are taken")
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
