"""SecurityHeadersMiddleware: the headers every response carries."""
from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from loadtester.web.middleware.scope import HttpMiddleware, add_missing_headers, on_response_start

SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]
API_HEADERS = [(b"cache-control", b"no-store")]          # and on /api/* responses


class SecurityHeadersMiddleware(HttpMiddleware):
    """X-Content-Type-Options, X-Frame-Options and Referrer-Policy on every response, and
    Cache-Control: no-store under /api/ (each unless the response sets it)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra = SECURITY_HEADERS + (API_HEADERS if scope.get("path", "").startswith("/api/") else [])

        def add_headers(message: Message) -> None:
            add_missing_headers(message, extra)

        await self.app(scope, receive, on_response_start(send, add_headers))
