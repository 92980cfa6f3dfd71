"""The documents: the web UI's pages (/, /test/{uuid}) and a run's report as HTML
(/report/{uuid}, no JavaScript) or PDF (/api/report/{uuid})."""
from __future__ import annotations

import pathlib
import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from loadtester.reports import htmlreport, pdfreport
from loadtester.web import api
from loadtester.web.context import context_of
from loadtester.web.endpoints import in_thread
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
    what the pages share (the brand, the theme switch) is written once."""
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


async def test_page(request: Request) -> Response:
    check_uuid(request.path_params["uuid"])
    return ui_page(request, "test.html", "loadtester test")
