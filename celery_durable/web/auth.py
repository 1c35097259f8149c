"""Who may change things through the web server.

Reads are open to whoever reaches the server. A request that changes
something (cancel, send an event, switch a rule) needs
`Authorization: Bearer <durable_web_token>`, compared in constant time.
Without a token configured the server binds only to loopback (see
`command.py`), and changes are taken only with a loopback `Host` header, so
a page on another site cannot reach it through DNS rebinding.

The dashboard sends changes with `fetch()` and a JSON body, never a cookie:
a forged cross-site form carries no token and cannot set the JSON content
type without a CORS preflight, which this server never grants. A request
whose `Origin` is another site is refused outright.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class Refused(Exception):
    """A change refused: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def check_change(request: Request, token: str | None) -> None:
    """Raise `Refused` unless this request may change something."""
    _check_origin(request)
    if token is None:
        host = _host_name(request.headers.get("host", ""))
        if not is_loopback(host):
            raise Refused(
                403,
                "changes without durable_web_token are only taken from loopback; "
                "set durable_web_token to serve other hosts",
            )
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Refused(401, "this request changes something: send Authorization: Bearer <token>")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Refused(401, "wrong token")


def _check_origin(request: Request) -> None:
    """A browser names the page that sent the request; another site's page is refused."""
    origin = request.headers.get("origin")
    if not origin:
        return  # not a browser, or a same-origin GET
    if origin == "null" or urlsplit(origin).netloc != request.headers.get("host", ""):
        raise Refused(403, f"cross-site request from {origin} refused")


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if ":" in host_header else host_header
