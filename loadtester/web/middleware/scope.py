"""What the middlewares read from an ASGI scope."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def request_headers(scope: Scope) -> dict[str, str]:
    """The request headers, names in lower case (the last of repeated ones wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def add_missing_headers(message: Message, extra: list[tuple[bytes, bytes]]) -> None:
    """Append `extra` (lower-case names) to an http.response.start message, each only when the
    response does not set that header itself."""
    names = {k.lower() for k, _ in message.get("headers", [])}
    message["headers"] = list(message.get("headers", [])) + \
        [(k, v) for k, v in extra if k not in names]


class HttpMiddleware:
    """A pure ASGI middleware for HTTP requests: other scopes (lifespan) pass straight through
    to the app; `handle` sees every HTTP request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


def on_response_start(send: Send, start: Callable[[Message], None]) -> Callable[[Message], Awaitable[None]]:
    """`send`, calling start(message) on the http.response.start message before it goes out."""
    async def send_after_start(message: Message) -> None:
        if message["type"] == "http.response.start":
            start(message)
        await send(message)
    return send_after_start
