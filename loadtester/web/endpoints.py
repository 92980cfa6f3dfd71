"""The /api/* and /healthz endpoints (async; the blocking reads of loadtester.web.api run in
Starlette's thread pool).  Each finds its ServeContext as request.app.state.ctx."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from loadtester import store
from loadtester.reports.display import display_url, plain_number
from loadtester.store import queries
from loadtester.web import api, pipeops, prometheus, reads, ssrf
from loadtester.web.context import ServeContext, context_of
from loadtester.web.errors import ApiError
from loadtester.web.logs import log_event
from loadtester.web.params import check_uuid, client_address, int_param, read_body
from loadtester.web.responses import error_response, json_response, sse_event
from loadtester.web.runs import RunProcess
from loadtester.web.validation import MAX_JSON_BYTES, MAX_JSON_DEPTH, check_depth, validate_start

DNS_TIMEOUT_S = 5.0                 # resolving a target's host name, at most
POLL_S = 0.5                        # the stream's database poll
KEEPALIVE_S = 15.0                  # the stream's comment line when nothing else was sent
RUN_ID_WAIT_S = 5.0                 # a PipeOps-style start waits this long for the run's id

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) in the thread pool; a StoreError is a 503."""
    try:
        return await run_in_threadpool(fn, *args)
    except store.StoreError as exc:
        raise ApiError(503, f"database: {exc}") from None


async def healthz(request: Request) -> Response:
    try:
        await run_in_threadpool(api.health, context_of(request))
    except Exception as exc:                    # noqa: BLE001 - any failure is "not ok"
        return json_response({"status": "error", "db": str(exc) or type(exc).__name__}, 503)
    return json_response({"status": "ok", "db": "ok"})


def check_caps(ctx: ServeContext, client: str) -> None:
    """429 when the client, or the server, runs as many tests as it may."""
    mine = len(ctx.manager.active(client))
    if mine >= ctx.max_per_client:
        raise ApiError(429, f"{client} already has {mine} tests running (at most "
                            f"{ctx.max_per_client} at a time); stop one or wait",
                       {"Retry-After": "5"})
    everyone = len(ctx.manager.active())
    if everyone >= ctx.max_running:
        raise ApiError(429, f"the server is running {everyone} tests, its limit; try again "
                            "later", {"Retry-After": "5"})


async def api_start(request: Request) -> Response:
    ctx = context_of(request)
    client = client_address(request)
    if ctx.limiter is not None:
        allowed, wait = ctx.limiter.take(client)
        if not allowed:
            return error_response(429, f"too many tests started from {client}: at most "
                                  f"{ctx.limiter.burst} in a row, then "
                                  f"{plain_number(ctx.limiter.per_s * 60)} a minute; retry in "
                                  f"{wait} s", {"Retry-After": str(wait)})
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return error_response(415, "send the test as JSON (Content-Type: application/json)")
    raw = await read_body(request, MAX_JSON_BYTES)
    try:
        payload = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        return error_response(400, "the request body is not valid JSON")
    except RecursionError:
        return error_response(400, f"the request body is nested too deeply (at most "
                                   f"{MAX_JSON_DEPTH} levels)")
    pipeops_body = pipeops.is_pipeops_body(payload)
    if pipeops_body:
        check_depth(payload)
        payload = pipeops.translate(payload)
    params = validate_start(payload)
    check_caps(ctx, client)
    try:
        addresses = await asyncio.wait_for(run_in_threadpool(ssrf.check_target, params.url,
                                                             ctx.allow_private), DNS_TIMEOUT_S)
    except ssrf.BlockedTarget as exc:
        log_event("target_refused", client=client, reason=str(exc))
        return error_response(400, str(exc))
    except TimeoutError:
        return error_response(400, f"resolving {params.host!r} took more than {DNS_TIMEOUT_S:g} s")
    if ctx.manager.shutting_down:
        return error_response(503, "the server is shutting down")
    check_caps(ctx, client)                      # again: no await between here and spawn
    try:
        # On the event loop's (long-lived) thread; the blast connects to the address checked.
        run = ctx.manager.spawn(params, client, addresses[0])
    except OSError as exc:
        return error_response(500, f"cannot start the test: {exc.strerror or exc}")
    log_event("run_started", uuid=run.uuid, client=client, pid=run.proc.pid,
              url=display_url(params.url, params.mask_host),
              users=params.users, duration=params.duration_s, pipeops_body=pipeops_body)
    headers = {"Location": f"/api/status/{run.uuid}"}
    if pipeops_body:
        test_id = await stored_run_id(ctx, run)
        return json_response({"test_id": test_id, "test_uuid": run.uuid, "status": "started",
                              "uuid": run.uuid}, 201, headers)
    return json_response({"uuid": run.uuid, "status": "running"}, 201, headers)


async def stored_run_id(ctx: ServeContext, run: RunProcess) -> int | None:
    """The id the blast stores its run under (the original answered it as test_id), once it
    has (None when it has not within RUN_ID_WAIT_S, or ended first)."""
    deadline = time.monotonic() + RUN_ID_WAIT_S
    while True:
        try:
            run_id = await in_thread(run_id_if_stored, ctx, run.uuid)
        except ApiError:
            run_id = None
        if run_id is not None or not run.alive or time.monotonic() > deadline:
            return run_id
        await asyncio.sleep(0.05)


def run_id_if_stored(ctx: ServeContext, run_uuid: str) -> int | None:
    with ctx.reader() as conn:
        return reads.run_id_of(conn, run_uuid)


async def api_status(request: Request) -> Response:
    return json_response(await in_thread(api.status, context_of(request),
                                         check_uuid(request.path_params["uuid"])))


async def api_metrics(request: Request) -> Response:
    return json_response(await in_thread(api.metrics, context_of(request),
                                         check_uuid(request.path_params["uuid"])))


async def api_timeseries(request: Request) -> Response:
    """Our {"uuid", "status", "seconds": [...]}, or with ?format=pipeops the original's list
    of {timestamp, requests, rps, avg_latency, success_rate}."""
    shape = request.query_params.get("format", "")
    if shape not in ("", "pipeops"):
        return error_response(400, "format must be pipeops (or left out for this API's shape)")
    read = api.pipeops_timeseries if shape == "pipeops" else api.timeseries
    return json_response(await in_thread(read, context_of(request),
                                         check_uuid(request.path_params["uuid"])))


async def api_historical_metrics(request: Request) -> Response:
    """The original PipeOps endpoint: flat totals and the time series of one run."""
    return json_response(await in_thread(api.historical_metrics, context_of(request),
                                         check_uuid(request.path_params["uuid"])))


async def prometheus_metrics(request: Request) -> Response:
    """GET /metrics: running and recent runs in the Prometheus text format."""
    finished = int_param(request, "finished", prometheus.FINISHED_RUNS, 0,
                         prometheus.MAX_FINISHED_RUNS)
    text = await in_thread(prometheus.exposition, context_of(request), finished)
    return Response(text, media_type=prometheus.CONTENT_TYPE)


async def api_running(request: Request) -> Response:
    return json_response(await in_thread(api.running, context_of(request)))


async def api_stop(request: Request) -> Response:
    ctx = context_of(request)
    run_uuid = check_uuid(request.path_params["uuid"])
    status = await in_thread(api.status, ctx, run_uuid)
    run = ctx.manager.get(run_uuid)
    if status["status"] != "running":
        return error_response(409, f"run {run_uuid} is not running (status {status['status']})")
    if run is None or not run.alive:
        return error_response(409, f"run {run_uuid} was not started by this server; stop it "
                                   "where it runs")
    ctx.manager.stop(run)
    log_event("run_stop", uuid=run_uuid, client=client_address(request))
    return json_response({"uuid": run_uuid, "status": "stopping"}, 202)


MAX_SEARCH = 200


async def api_history(request: Request) -> Response:
    """?page=&per_page=&q= (label or URL containing it)&sort= (queries.RUN_ORDERS)."""
    page = int_param(request, "page", 1, 1, 1_000_000)
    per_page = int_param(request, "per_page", 20, 1, 100)
    search = request.query_params.get("q", "").strip()
    if len(search) > MAX_SEARCH:
        return error_response(400, f"q: at most {MAX_SEARCH} characters")
    order = request.query_params.get("sort", "") or "newest"
    if order not in queries.RUN_ORDERS:
        return error_response(400, f"sort must be one of {', '.join(queries.RUN_ORDERS)}")
    return json_response(await in_thread(api.history, context_of(request), page, per_page,
                                         search or None, order))


EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json",
                "ndjson": "application/x-ndjson", "hgrm": "text/plain; charset=utf-8"}


async def api_export(request: Request) -> Response:
    """A run's per-second rows as `loadtester export` writes them: ?format=csv|json|ndjson;
    or its latency percentile spectrum: ?format=hgrm."""
    run_uuid = check_uuid(request.path_params["uuid"])
    fmt = request.query_params.get("format", "") or "csv"
    if fmt not in EXPORT_TYPES:
        return error_response(400, f"format must be one of {', '.join(EXPORT_TYPES)}")
    text = await in_thread(api.export, context_of(request), run_uuid, fmt)
    return Response(text, media_type=EXPORT_TYPES[fmt], headers={
        "Content-Disposition": f"attachment; filename=loadtest-{run_uuid[:8]}.{fmt}"})


async def api_delete(request: Request) -> Response:
    """DELETE /api/runs/{uuid}: a finished run and its rows (409 while it runs)."""
    ctx = context_of(request)
    run_uuid = check_uuid(request.path_params["uuid"])
    await in_thread(api.delete, ctx, run_uuid)
    log_event("run_deleted", uuid=run_uuid, client=client_address(request))
    return json_response({"uuid": run_uuid, "status": "deleted"})


async def api_compare(request: Request) -> Response:
    a, b = request.query_params.get("a"), request.query_params.get("b")
    if not a or not b:
        return error_response(400, "give two runs: /api/compare?a=UUID&b=UUID")
    return json_response(await in_thread(api.compare, context_of(request), check_uuid(a),
                                         check_uuid(b)))


async def api_stream(request: Request) -> Response:
    """Server-Sent Events: `window` per closed second (after ?since= / Last-Event-ID), then
    `done` with the final status (or `error`)."""
    ctx = context_of(request)
    run_uuid = check_uuid(request.path_params["uuid"])
    since = int_param(request, "since", 0, 0, 10_000_000)
    last_id = request.headers.get("last-event-id", "")
    if last_id.isdigit():
        since = max(since, int(last_id))
    first = await in_thread(api.stream_poll, ctx, run_uuid, since)     # 404 before streaming

    async def events() -> AsyncIterator[str]:
        nonlocal since
        status, rows = first
        yield "retry: 2000\n\n"
        last_sent = time.monotonic()
        while True:
            for row in rows:
                data = dict(row, uuid=run_uuid, status=status["status"],
                            elapsed_s=status["elapsed_s"], remaining_s=status["remaining_s"],
                            progress=status["progress"])
                yield sse_event("window", data, event_id=row["second"])
                since = row["second"]
                last_sent = time.monotonic()
            if status["status"] != "running":
                yield sse_event("done", status)
                return
            if time.monotonic() - last_sent > KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(POLL_S)
            try:
                status, rows = await in_thread(api.stream_poll, ctx, run_uuid, since)
            except ApiError as exc:
                yield sse_event("error", {"error": exc.message})
                return

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
