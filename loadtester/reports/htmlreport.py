"""A run's report as one self-contained HTML page: inline SVG charts, no JavaScript, every
string that came from a user (URL, label, ...) escaped.  Takes the `data` dict of
loadtester.reports.data.report_data."""
from __future__ import annotations

import html

from loadtester import __version__
from loadtester.reports.charts import Chart, chart_series, tick_label
from loadtester.reports.content import LATENCY_KEYS, key_numbers, latency_rows, status_rows


def svg_chart(title: str, unit: str, xs: list, series, *, y_max=None, width: int = 760,
              height: int = 240) -> str:
    chart = Chart(xs, series, y_max=y_max, left=58, top=30, width=width - 58 - 16,
                  height=height - 30 - 34)
    e = html.escape
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="100%" role="img" aria-label="{e(title)}">',
             f"<title>{e(title)}</title>",
             f'<text x="{chart.left}" y="18" class="ct">{e(title)}</text>']
    # legend
    lx = width - 16
    for name, color, _ in reversed(series):
        text_w = 7 * len(name) + 22
        lx -= text_w
        parts.append(f'<rect x="{lx}" y="10" width="14" height="4" fill="{color}"/>'
                     f'<text x="{lx + 18}" y="16" class="lg">{e(name)}</text>')
    for t in chart.y_ticks():
        y = chart.py(t)
        parts.append(f'<line x1="{chart.left}" y1="{y:.1f}" x2="{chart.left + chart.width}" '
                     f'y2="{y:.1f}" class="grid"/>'
                     f'<text x="{chart.left - 6}" y="{y + 4:.1f}" class="yt">{tick_label(t)}</text>')
    base = chart.top + chart.height
    for t in chart.x_ticks():
        x = chart.px(t)
        parts.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" class="axis"/>'
                     f'<text x="{x:.1f}" y="{base + 17}" class="xt">{tick_label(t)}</text>')
    parts.append(f'<line x1="{chart.left}" y1="{base}" x2="{chart.left + chart.width}" y2="{base}" '
                 f'class="axis"/><line x1="{chart.left}" y1="{chart.top}" x2="{chart.left}" '
                 f'y2="{base}" class="axis"/>')
    parts.append(f'<text x="{chart.left + chart.width}" y="{height - 2}" class="xl">second of '
                 f'the run</text><text x="{chart.left - 6}" y="{chart.top - 8}" class="yl">'
                 f'{e(unit)}</text>')
    drawn = False
    for name, color, ys in series:
        for seg in chart.segments(ys):
            drawn = True
            if len(seg) == 1:
                parts.append(f'<circle cx="{seg[0][0]:.1f}" cy="{seg[0][1]:.1f}" r="3" '
                             f'fill="{color}"/>')
                continue
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                         f'stroke-linejoin="round" points="{points}"><title>{e(name)}</title>'
                         f'</polyline>')
    if not drawn:
        parts.append(f'<text x="{chart.left + chart.width / 2}" y="{chart.top + chart.height / 2}" '
                     f'class="empty">no per-second data</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;
 background:#f9fafb;margin:0}
main{max-width:840px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#6b7280;font-size:13px;word-break:break-all}
.summary{background:#eef2ff;border-left:4px solid #4f46e5;padding:10px 14px;margin:16px 0;
 font-weight:600}
.status{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;
 background:#e5e7eb;text-transform:uppercase;letter-spacing:.03em}
.status.completed{background:#dcfce7}.status.stopped{background:#fef9c3}
.status.failed,.status.interrupted{background:#fee2e2}.status.running{background:#dbeafe}
.grid4{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:8px}
.kv{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:8px 10px}
.kv b{display:block;font-size:17px}.kv span{color:#6b7280;font-size:12px}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #e5e7eb;padding:5px 8px;text-align:right;font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left}th{background:#f3f4f6;font-weight:600}
.chart{background:#fff;border:1px solid #e5e7eb;border-radius:6px;margin:6px 0 14px}
.chart .ct{font-size:13px;font-weight:600;fill:#111827}.chart .lg{font-size:11px;fill:#374151}
.chart .grid{stroke:#eef0f3}.chart .axis{stroke:#9ca3af}
.chart .yt{font-size:10px;fill:#6b7280;text-anchor:end}
.chart .xt{font-size:10px;fill:#6b7280;text-anchor:middle}
.chart .xl{font-size:10px;fill:#6b7280;text-anchor:end}
.chart .yl{font-size:10px;fill:#6b7280;text-anchor:end}
.chart .empty{font-size:12px;fill:#9ca3af;text-anchor:middle}
footer{color:#9ca3af;font-size:12px;margin-top:28px}
"""


def render_html(data: dict) -> str:
    e = html.escape
    r = data["report"]
    status = str(data.get("status") or r.get("status") or "")
    verdict = (f' <span class="status failed" title="{e(data.get("result_reason") or "")}">'
               'failed</span>') if data.get("result") == "failed" else ""
    title = f"Load test {data.get('label') or data['uuid'][:8]}"
    cards = "".join(f'<div class="kv"><span>{e(k)}</span><b>{e(v)}</b></div>'
                    for k, v in key_numbers(data))
    lat_head = "".join(f"<th>{e(name)}</th>" for _, name in LATENCY_KEYS)
    lat_body = "".join(f"<tr><td>{e(title_)}</td>" + "".join(f"<td>{e(v)}</td>" for v in values)
                       + "</tr>" for title_, values in latency_rows(r))
    codes = status_rows(r)
    codes_html = ("<table><tr><th>status / error</th><th>count</th></tr>"
                  + "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in codes)
                  + "</table>") if codes else "<p class=meta>no responses</p>"
    series = chart_series(data.get("seconds") or [])
    charts = (svg_chart("Throughput per second", "req/s", series["xs"], series["rps"])
              + svg_chart("Latency per second (p50 / p95 / p99)", "ms", series["xs"],
                          series["latency"])
              + svg_chart("Success rate per second", "%", series["xs"], series["success"],
                          y_max=100.0))
    started = data.get("started_at") or "-"
    completed = data.get("completed_at") or "-"
    rule = r.get("success_rule") or ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{e(title)} <span class="status {e(status)}">{e(status)}</span>{verdict}</h1>
<div class="meta">{e(data.get('method') or r.get('method') or 'GET')} {e(data.get('url') or '')}</div>
<div class="meta">run {e(str(data.get('run_id') or ''))} &middot; {e(data['uuid'])} &middot;
started {e(started)} &middot; ended {e(completed)}</div>
<div class="summary">{e(data.get('summary') or '')}</div>
<h2>Key numbers</h2><div class="grid4">{cards}</div>
<h2>Latency</h2><table><tr><th></th>{lat_head}</tr>{lat_body}</table>
<h2>Status codes and errors</h2>{codes_html}
<p class="meta">{e(rule)}</p>
<h2>Per second</h2>{charts}
<footer>loadtester {e(__version__)} &middot; latency measured from the request's first byte
written (intended send time in open loop) to the response's last byte read.</footer>
</main></body></html>
"""
