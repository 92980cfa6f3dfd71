"""The ASGI middlewares around the app, one per file, pure ASGI so that streaming responses
pass straight through.  create_app stacks them, outermost first:

    trust_proxies               the client from X-Forwarded-For of trusted proxies (uvicorn's)
    SecurityHeadersMiddleware   nosniff, DENY, no-referrer on every response; no-store on /api/*
    RequestIdMiddleware         X-Request-ID: the client's (when sane) or a new one
    AccessLogMiddleware         one JSON line per request (id, method, path, status, ms, client)
    LoopbackHostMiddleware      421 unless Host is loopback (when bound to a loopback address)
    SameOriginMiddleware        403 for unsafe methods with a foreign Origin
    TokenAuthMiddleware         401 on /api/* and /report/* without the bearer token

so a refusal still carries the headers and is logged.
"""
from loadtester.web.middleware.accesslog import AccessLogMiddleware
from loadtester.web.middleware.auth import TokenAuthMiddleware
from loadtester.web.middleware.headers import SecurityHeadersMiddleware
from loadtester.web.middleware.hosts import LoopbackHostMiddleware
from loadtester.web.middleware.origin import SameOriginMiddleware
from loadtester.web.middleware.proxies import trust_proxies
from loadtester.web.middleware.requestid import RequestIdMiddleware

__all__ = ["AccessLogMiddleware", "LoopbackHostMiddleware", "RequestIdMiddleware",
           "SameOriginMiddleware", "SecurityHeadersMiddleware", "TokenAuthMiddleware",
           "trust_proxies"]
