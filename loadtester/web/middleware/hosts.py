"""LoopbackHostMiddleware: bound to a loopback address, answer only loopback Host names (no DNS
rebinding)."""
from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from loadtester.web.middleware.scope import request_headers
from loadtester.web.responses import error_response

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def host_of(value: str) -> str:
    """A Host header's host, lower case, without the port ('[::1]' keeps its brackets)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback_host(host: str) -> bool:
    """localhost, or a loopback address literal (127.0.0.2 too, for a server bound there): a
    rebinding attacker's page sends its own name, never one of these."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LoopbackHostMiddleware:
    """421 for a request whose Host is not localhost or a loopback address (no Host: allowed)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = host_of(request_headers(scope).get("host", ""))
            if host and not is_loopback_host(host):
                response = error_response(421, "this server only answers to 127.0.0.1 / localhost")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
