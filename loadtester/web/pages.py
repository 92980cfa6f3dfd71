"""The documents: the web UI's pages (/, /test/{uuid}, /compare) and a run's report as HTML
(/report/{uuid}, no JavaScript) or PDF (/api/report/{uuid})."""
from __future__ import annotations

import pathlib
import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from loadtester.reports import htmlreport, pdfreport
from loadtester.web import api
from loadtester.web.context import ServeContext, context_of
from loadtester.web.endpoints import in_thread
from loadtester.web.errors import ApiError
from loadtester.web.params import check_uuid

REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
              "frame-ancestors 'none'")


async def api_report_pdf(request: Request) -> Response:
    run_uuid = check_uuid(request.path_params["uuid"])
    data = await in_thread(api.report_data, context_of(request), run_uuid)
    pdf = await run_in_threadpool(pdfreport.render_pdf, data)
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f"attachment; filename=loadtest-{run_uuid[:8]}.pdf"})


async def report_html(request: Request) -> Response:
    run_uuid = check_uuid(request.path_params["uuid"])
    data = await in_thread(api.report_data, context_of(request), run_uuid)
    page = await run_in_threadpool(htmlreport.render_html, data)
    return HTMLResponse(page, headers={"Content-Security-Policy": REPORT_CSP})


INCLUDE_RE = re.compile(r"^[ \t]*<!--#include ([a-z-]+) -->\n?", re.MULTILINE)


def render_page(web_dir: pathlib.Path, name: str) -> str:
    """web_dir/name with each `<!--#include PART -->` line replaced by partials/PART.html:
    what the pages share (head, top bar, theme switch) is written once."""
    page = (web_dir / name).read_text(encoding="utf-8")
    return INCLUDE_RE.sub(
        lambda m: (web_dir / "partials" / f"{m.group(1)}.html").read_text(encoding="utf-8"), page)


def ui_page(request: Request, name: str, title: str) -> Response:
    """A page of the web UI (web_dir/name), or a note that the UI is not installed."""
    web_dir = context_of(request).web_dir
    if (web_dir / name).is_file():
        return HTMLResponse(render_page(web_dir, name), headers={"Cache-Control": "no-cache"})
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
        "</head><body><h1>loadtester</h1><p>The web UI is not installed here "
        f"(no {name}). The API is at <a href=/api/history>/api/history</a>.</p></body></html>")


async def index_page(request: Request) -> Response:
    return ui_page(request, "index.html", "loadtester")


NOT_FOUND_PAGE = ("<!doctype html><html lang=en><head><meta charset=utf-8>"
                  "<meta name=viewport content='width=device-width, initial-scale=1'>"
                  "<link rel=icon href='data:,'><title>Run not found · loadtester</title></head>"
                  "<body style='font-family:"
                  "system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem'>"
                  "<h1>Run not found</h1><p>No run is stored under this id: it may have been "
                  "deleted, or the link is mistyped.</p><p><a href=/>All tests</a></p>"
                  "</body></html>")


def run_exists(ctx: ServeContext, run_uuid: str) -> bool:
    with ctx.reader() as conn:
        try:
            api.lookup(ctx, conn, run_uuid)
        except ApiError:
            return False
    return True


async def test_page(request: Request) -> Response:
    """The run page; a plain 404 "Run not found" page for an id no run has.  (Behind a token
    the page itself asks the API, with the token: whether a run exists is not told to a
    request without it.)"""
    ctx = context_of(request)
    try:
        run_uuid = check_uuid(request.path_params["uuid"])
    except ApiError:
        return HTMLResponse(NOT_FOUND_PAGE, status_code=404)
    if not ctx.token and not await in_thread(run_exists, ctx, run_uuid):
        return HTMLResponse(NOT_FOUND_PAGE, status_code=404)
    return ui_page(request, "test.html", "loadtester test")


async def compare_page(request: Request) -> Response:
    """/compare?a=UUID&b=UUID: two runs side by side (the page reads /api/compare)."""
    return ui_page(request, "compare.html", "loadtester compare")
