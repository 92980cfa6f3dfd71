"""SameOriginMiddleware: no cross-site POSTs (CSRF)."""
from __future__ import annotations

import urllib.parse

from starlette.types import ASGIApp, Receive, Scope, Send

from loadtester.web.middleware.scope import request_headers
from loadtester.web.responses import error_response

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class SameOriginMiddleware:
    """403 for an unsafe method whose Origin is 'null' or another host than Host (no Origin:
    allowed)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method", "GET") not in SAFE_METHODS:
            headers = request_headers(scope)
            origin = headers.get("origin")
            if origin is not None:
                parsed = urllib.parse.urlsplit(origin)
                if origin == "null" or parsed.netloc.lower() != headers.get("host", "").lower():
                    response = error_response(403, "cross-origin request refused")
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
