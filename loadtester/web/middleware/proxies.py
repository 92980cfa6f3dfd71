"""Behind a reverse proxy (an ingress): the client a request comes from is the one the proxy
names in X-Forwarded-For, when - and only when - the proxy is trusted (`serve
--forwarded-allow-ips`, uvicorn's option and meaning; default 127.0.0.1).  The per-client
limits, caps and the access log then see the real client, not the proxy.

The middleware is uvicorn's ProxyHeadersMiddleware (client from X-Forwarded-For: the last
address that is not itself a trusted proxy; scheme from X-Forwarded-Proto); this module
checks the option, which uvicorn would take as anything at all."""
from __future__ import annotations

import ipaddress
from typing import Any, cast

from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

DEFAULT_TRUSTED_PROXIES = "127.0.0.1"
ANY_PROXY = "*"


def parse_trusted_proxies(text: str) -> list[str]:
    """'127.0.0.1,10.0.0.0/8' -> the addresses and networks whose X-Forwarded-For is believed;
    '*' trusts every peer, '' none.  ValueError (one line) for anything else."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if ANY_PROXY in items:
        return [ANY_PROXY]
    trusted = []
    for item in items:
        try:
            # (networks normalised: uvicorn would take 10.0.0.1/8 as a name matching nothing)
            trusted.append(str(ipaddress.ip_network(item, strict=False)) if "/" in item
                           else str(ipaddress.ip_address(item)))
        except ValueError:
            raise ValueError(f"invalid trusted proxy {item!r}: give IP addresses or networks "
                             "(127.0.0.1,10.0.0.0/8), * for any, or '' for none") from None
    return trusted


def trust_proxies(app: ASGIApp, trusted: list[str]) -> ASGIApp:
    """`app`, taking the client from X-Forwarded-For(-Proto) of the `trusted` peers."""
    if not trusted:
        return app
    # (uvicorn types ASGI apps its own way: the same callables as Starlette's)
    return cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=trusted))
