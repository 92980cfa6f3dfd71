"""TokenAuthMiddleware: LOADTESTER_TOKEN guards /api/*, /report/* and /metrics."""
from __future__ import annotations

import hmac
import urllib.parse

from starlette.types import ASGIApp, Receive, Scope, Send

from loadtester.web.middleware.scope import request_headers
from loadtester.web.responses import error_response

PROTECTED_PREFIXES = ("/api/", "/report/", "/metrics/")
PROTECTED_PATHS = ("/metrics",)                   # Prometheus: `authorization: {credentials}`


class TokenAuthMiddleware:
    """401 under /api/ and /report/, and on /metrics, unless the request carries
    `Authorization: Bearer <token>` (or, on GET, `?access_token=<token>`: for links and
    EventSource)."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.token = token

    def supplied_token(self, scope: Scope) -> str | None:
        auth = request_headers(scope).get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        if scope.get("method", "GET") == "GET":
            query_string: bytes = scope.get("query_string", b"")
            query = urllib.parse.parse_qs(query_string.decode("latin-1"))
            values = query.get("access_token")
            return values[0] if values else None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path.startswith(PROTECTED_PREFIXES)
                                        or path in PROTECTED_PATHS):
            supplied = self.supplied_token(scope)
            if supplied is None or not hmac.compare_digest(supplied.encode(), self.token.encode()):
                response = error_response(401, "missing or wrong bearer token",
                                          {"WWW-Authenticate": 'Bearer realm="loadtester"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
