"""`loadtester serve`: the ASGI app (Starlette; served by loadtester.web.server on uvicorn,
uvloop + httptools): its routes, error handlers and middleware stack.

API (JSON; errors are {"error": "..."} with the matching status):
  POST /api/start                 {url, users, duration, ramp_up, method, headers, body, auth,
                                  mask_host, rate, pipeline, label, thresholds,
                                  abort_on_error_rate}
                                  -> 201 {uuid, status: "running"}; or the original PipeOps
                                  body {host, ...} -> 201 {test_id, test_uuid, status:
                                  "started", uuid} (loadtester.web.pipeops); unknown fields 400
  GET  /api/status/{uuid}         status, result (failed / passed / no thresholds), progress,
                                  elapsed/remaining, summary line, thresholds, error_messages
  GET  /api/metrics/{uuid}        the report dict (as `blast --json`) + live fields + result
                                  + the original's flat keys (avg_rps, error_rate, p95, ...)
  GET  /api/timeseries/{uuid}     {"seconds": [{second (1-based), rps, errors, success_rate
                                  (0..1), p50_ms, p95_ms, p99_ms, avg_ms, ...}]};
                                  ?format=pipeops: the original's list of points
  GET  /api/historical-metrics/{uuid}  the original's flat totals and time series
  GET  /metrics                   Prometheus text: running and recent runs (web.prometheus)
  GET  /api/running               runs in progress (with rps_last_second)
  POST /api/stop/{uuid}           202 {uuid, status: "stopping"}; 404 unknown; 409 not running
  GET  /api/history?page=&per_page=&q=&sort=   q: label or URL contains; sort: newest, oldest,
                                  rps, p99, errors, duration, users
  GET  /api/compare?a=UUID&b=UUID loadtester.analysis.compare.compare_runs (+ its plain
                                  summary, the settings side by side)
  GET  /api/export/{uuid}?format= the per-second rows as `loadtester export` (csv/json/ndjson/hgrm)
  DELETE /api/runs/{uuid}         a finished run and its rows; 409 while it runs
  GET  /api/stream/{uuid}         Server-Sent Events: `event: window` per closed second (replays
                                  the run so far; `?since=N` or Last-Event-ID skips seconds <= N),
                                  then `event: done` with the final status
  GET  /api/report/{uuid}         PDF download;  GET /report/{uuid}: HTML report (no JS)
  GET  /healthz                   {"status": "ok", "db": "ok"} or 503
  GET  /, /test/{uuid}, /compare?a=&b=, /static/  the web UI (loadtester/web/static/); an
                                  unknown run's page is a plain 404 "Run not found"

Where things are: validation (the POST /api/start body), runs (the blast subprocesses), series
(per-second rows), api (the payloads, read from the database), endpoints and pages (the
handlers), middleware/ (headers, request id, access log, Host, Origin, token), ratelimit, logs,
server (the listening socket, signals).

Safety: targets are checked by loadtester.web.ssrf (loopback/private refused unless
--allow-private; cloud metadata always); POST /api/start is rate limited per client address
(token bucket, --rate-limit) and capped at --max-per-client running tests per client and
--max-running in all.  With LOADTESTER_TOKEN set, /api/*, /report/* and /metrics need
`Authorization: Bearer <token>` (or `?access_token=` on GET, for links and EventSource).
Behind a proxy in --forwarded-allow-ips (uvicorn's; default 127.0.0.1) the client is the one
its X-Forwarded-For names.  Unsafe methods with a foreign Origin are refused; bound to a
loopback address, only loopback Host headers are accepted (DNS rebinding).  Every response
carries X-Request-ID; one JSON log line per request goes to stderr.  SIGTERM/SIGINT: stop every
blast (SIGTERM), wait up to 10 s for them to store 'stopped', then exit.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from loadtester.web import endpoints, pages
from loadtester.web.context import ServeContext
from loadtester.web.errors import ApiError
from loadtester.web.logs import log
from loadtester.web.middleware import (
    AccessLogMiddleware,
    LoopbackHostMiddleware,
    RequestIdMiddleware,
    SameOriginMiddleware,
    SecurityHeadersMiddleware,
    TokenAuthMiddleware,
    trust_proxies,
)
from loadtester.web.responses import error_response
from loadtester.web.runs import SHUTDOWN_WAIT_S

__all__ = ["ServeContext", "create_app"]

HTTP_MESSAGES = {404: "not found", 405: "method not allowed"}


# GET /api/<name>/{uuid}: what the API tells about one run.
PER_RUN_API = {"status": endpoints.api_status, "metrics": endpoints.api_metrics,
               "timeseries": endpoints.api_timeseries, "stream": endpoints.api_stream,
               "historical-metrics": endpoints.api_historical_metrics,
               "report": pages.api_report_pdf, "export": endpoints.api_export}


def routes(ctx: ServeContext) -> list[BaseRoute]:
    return [
        Route("/healthz", endpoints.healthz),
        Route("/metrics", endpoints.prometheus_metrics),
        Route("/api/start", endpoints.api_start, methods=["POST"]),
        Route("/api/stop/{uuid}", endpoints.api_stop, methods=["POST"]),
        *(Route(f"/api/{name}/{{uuid}}", endpoint) for name, endpoint in PER_RUN_API.items()),
        Route("/api/runs/{uuid}", endpoints.api_delete, methods=["DELETE"]),
        Route("/api/running", endpoints.api_running),
        Route("/api/history", endpoints.api_history),
        Route("/api/compare", endpoints.api_compare),
        Route("/report/{uuid}", pages.report_html),
        Route("/", pages.index_page),
        Route("/test/{uuid}", pages.test_page),
        Route("/compare", pages.compare_page),
        Mount("/static", StaticFiles(directory=str(ctx.web_dir), check_dir=False), name="static"),
    ]


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, HTTP_MESSAGES.get(exc.status_code, str(exc.detail)),
                          getattr(exc, "headers", None))


async def on_crash(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal server error")


def create_app(ctx: ServeContext) -> ASGIApp:
    """The app for `ctx`, wrapped in its middlewares (outside Starlette's own error handling,
    so that even a 500 carries X-Request-ID and is logged)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # Shutdown: the blasts were sent SIGTERM when the signal arrived (see server.py); give
        # them time to store 'stopped' (wait_all asks any still running to stop first).
        await run_in_threadpool(ctx.manager.wait_all, SHUTDOWN_WAIT_S)

    starlette = Starlette(routes=routes(ctx), lifespan=lifespan, exception_handlers={
        ApiError: on_api_error, HTTPException: on_http_error, Exception: on_crash})
    starlette.state.ctx = ctx
    app: ASGIApp = starlette
    if ctx.token:
        app = TokenAuthMiddleware(app, ctx.token)
    app = SameOriginMiddleware(app)
    if ctx.loopback_only_hosts:
        app = LoopbackHostMiddleware(app)
    app = AccessLogMiddleware(app)
    app = RequestIdMiddleware(app)
    return trust_proxies(SecurityHeadersMiddleware(app), ctx.trusted_proxies)
