"""AccessLogMiddleware: one JSON log line per request."""
from __future__ import annotations

import time

from starlette.types import Message, Receive, Scope, Send

from loadtester.web.logs import log_access
from loadtester.web.middleware.requestid import request_id_of
from loadtester.web.middleware.scope import HttpMiddleware, on_response_start


class AccessLogMiddleware(HttpMiddleware):
    """request_id, method, path, status (500 when no response was started), ms and client
    address, logged when the request ends (however it ends)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 0

        def note_status(message: Message) -> None:
            nonlocal status
            status = message["status"]

        try:
            await self.app(scope, receive, on_response_start(send, note_status))
        finally:
            client = scope.get("client")
            log_access(request_id=request_id_of(scope), method=scope.get("method"),
                       path=scope.get("path", ""), status=status or 500,
                       ms=round((time.perf_counter() - started) * 1000, 2),
                       client=client[0] if client else None)
