"""RequestIdMiddleware: every request gets an id, echoed as X-Request-ID and logged."""
from __future__ import annotations

import re
import uuid as _uuid

from starlette.types import Message, Receive, Scope, Send

from loadtester.web.middleware.scope import (
    HttpMiddleware,
    add_missing_headers,
    on_response_start,
    request_headers,
)

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(scope: Scope) -> str | None:
    """The id RequestIdMiddleware gave this request (scope["state"]["request_id"])."""
    request_id = scope.get("state", {}).get("request_id")
    return request_id if isinstance(request_id, str) else None


class RequestIdMiddleware(HttpMiddleware):
    """The client's X-Request-ID when it is 1-128 of [A-Za-z0-9._:-], else a new uuid4 hex:
    kept in scope["state"] (request.state.request_id) and sent back as X-Request-ID."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = request_headers(scope).get("x-request-id", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else _uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        extra = [(b"x-request-id", request_id.encode())]

        def add_id(message: Message) -> None:
            add_missing_headers(message, extra)

        await self.app(scope, receive, on_response_start(send, add_id))
