"""A run's report as one self-contained HTML page: inline SVG charts, no JavaScript, every
string that came from a user (URL, label, ...) escaped.  Takes the `data` dict of
loadtester.reports.data.report_data."""
from __future__ import annotations

import html

from loadtester import __version__
from loadtester.reports.charts import Chart, chart_series, has_values, tick_label
from loadtester.reports.content import (
    LATENCY_KEYS,
    NO_RESPONSES,
    key_numbers,
    latency_rows,
    result_line,
    run_times,
    status_rows,
    target_table,
    threshold_rows,
    traffic_rows,
)


def empty_chart(title: str, note: str) -> str:
    e = html.escape
    return (f'<div class="chart empty" role="img" aria-label="{e(title)}: {e(note)}">'
            f'<b>{e(title)}</b><span>{e(note)}</span></div>')


def svg_chart(title: str, unit: str, xs: list, series, *, y_max=None, width: int = 760,
              height: int = 240) -> str:
    if not has_values(series):
        return empty_chart(title, NO_RESPONSES if xs else "no per-second data stored")
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
    for name, color, ys in series:
        for seg in chart.segments(ys):
            if len(seg) == 1:
                parts.append(f'<circle cx="{seg[0][0]:.1f}" cy="{seg[0][1]:.1f}" r="3" '
                             f'fill="{color}"/>')
                continue
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                         f'stroke-linejoin="round" points="{points}"><title>{e(name)}</title>'
                         f'</polyline>')
    parts.append("</svg>")
    return "".join(parts)


# Light and dark (prefers-color-scheme) as the dashboard has them; narrow screens (a 390 px
# phone) get one column and tables that fit.
_CSS = """
:root{color-scheme:light dark;--fg:#111827;--muted:#6b7280;--bg:#f9fafb;--card:#fff;
 --line:#e5e7eb;--head:#f3f4f6;--grid:#eef0f3;--axis:#9ca3af;--accent:#4f46e5;--accent-bg:#eef2ff;
 --good:#166534;--good-bg:#dcfce7;--bad:#991b1b;--bad-bg:#fee2e2;--warn-bg:#fef9c3;
 --info-bg:#dbeafe;--neutral-bg:#e5e7eb}
@media (prefers-color-scheme:dark){:root{--fg:#e5e7eb;--muted:#9ca3af;--bg:#0b1020;--card:#111827;
 --line:#374151;--head:#1f2937;--grid:#1f2937;--axis:#6b7280;--accent:#818cf8;
 --accent-bg:#1e1b4b;--good:#86efac;--good-bg:#14532d;--bad:#fca5a5;--bad-bg:#7f1d1d;
 --warn-bg:#713f12;--info-bg:#1e3a8a;--neutral-bg:#374151}}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
 background:var(--bg);margin:0}
main{max-width:840px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px;overflow-wrap:anywhere}h2{font-size:16px;margin:28px 0 8px}
.meta{color:var(--muted);font-size:13px;overflow-wrap:anywhere}
.summary{background:var(--accent-bg);border-left:4px solid var(--accent);padding:10px 14px;
 margin:16px 0;font-weight:600;overflow-wrap:anywhere}
.verdict{border-left:4px solid var(--bad);background:var(--bad-bg);color:var(--fg);
 padding:10px 14px;margin:16px 0;font-weight:600;overflow-wrap:anywhere}
.status{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;color:var(--fg);
 background:var(--neutral-bg);text-transform:uppercase;letter-spacing:.03em;vertical-align:middle}
.status.completed,.status.passed{background:var(--good-bg)}.status.stopped{background:var(--warn-bg)}
.status.failed,.status.interrupted{background:var(--bad-bg)}.status.running{background:var(--info-bg)}
.status.failed{color:var(--bad);font-weight:700}
.grid4{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.kv{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.kv b{display:block;font-size:17px;overflow-wrap:anywhere}.kv span{color:var(--muted);font-size:12px}
.kv.bad b{color:var(--bad)}.kv.good b{color:var(--good)}
table{border-collapse:collapse;background:var(--card);width:100%}
th,td{border:1px solid var(--line);padding:5px 8px;text-align:right;
 font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left;overflow-wrap:anywhere}
th{background:var(--head);font-weight:600}td.fail{color:var(--bad);font-weight:700}
.chart{display:block;background:var(--card);border:1px solid var(--line);border-radius:6px;
 margin:6px 0 14px}
.chart.empty{padding:12px 14px}.chart.empty b{display:block;font-size:13px}
.chart.empty span{display:block;color:var(--muted);text-align:center;padding:28px 0}
.chart .ct{font-size:13px;font-weight:600;fill:var(--fg)}.chart .lg{font-size:11px;fill:var(--fg)}
.chart .grid{stroke:var(--grid)}.chart .axis{stroke:var(--axis)}
.chart .yt,.chart .xt,.chart .xl,.chart .yl{font-size:10px;fill:var(--muted)}
.chart .yt,.chart .xl,.chart .yl{text-anchor:end}.chart .xt{text-anchor:middle}
table.facts th{text-align:left;font-weight:600;width:1%;white-space:nowrap;overflow-wrap:normal}
table.facts td{text-align:left;overflow-wrap:anywhere;word-break:break-word}
footer{color:var(--muted);font-size:12px;margin-top:28px}
@media (max-width:600px){main{padding:12px}h1{font-size:19px}
 table.targets{font-size:12px}table.targets th,table.targets td{padding:4px 3px}}
"""


def _table(head: list[str], rows: list[list[str]], classes: list[list[str]] | None = None,
           css: str = "") -> str:
    e = html.escape
    body = "".join(
        "<tr>" + "".join(f'<td class="{e(c)}">{e(v)}</td>' if c else f"<td>{e(v)}</td>"
                         for v, c in zip(row, (classes[i] if classes else [""] * len(row))))
        + "</tr>" for i, row in enumerate(rows))
    return (f'<table class="{css}">' if css else "<table>") + "<tr>" + "".join(
        f"<th>{e(h)}</th>" for h in head) + "</tr>" + body + "</table>"


def traffic_html(report: dict) -> str:
    """What a shaped run sent (content.traffic_rows) and its per-target (or per-step) table;
    "" for a plain run."""
    e = html.escape
    out = ""
    facts = traffic_rows(report)
    if facts:
        out += ('<h2>Traffic</h2><table class="facts">' + "".join(
            f'<tr><th scope="row">{e(label)}</th><td>{e(text)}</td></tr>' for label, text in facts)
            + "</table>")
    table = target_table(report)
    if table is not None:
        title, head, rows, note = table
        out += f"<h2>{e(title)}</h2>" + _table(head, rows, css="targets")
        if note:
            out += f'<p class="meta">{e(note)}</p>'
    return out


def render_html(data: dict) -> str:
    e = html.escape
    r = data["report"]
    status = str(data.get("status") or r.get("status") or "")
    verdict = result_line(data)
    failed = verdict is not None and verdict[1] == "bad"
    status_class = "" if failed and status == "completed" else status   # never green if failed
    pill = ""
    verdict_box = ""
    if verdict is not None:
        title_, tone, reason = verdict
        css = {"bad": "failed", "good": "passed"}.get(tone, "neutral")
        pill = f' <span class="status {css}" title="{e(reason)}">{e(title_)}</span>'
        if failed:
            verdict_box = f'<div class="verdict">Failed: {e(reason)}</div>'
    title = f"Load test {data.get('label') or data['uuid'][:8]}"
    tones = {"Result": (verdict[1] if verdict else "")}
    cards = "".join(f'<div class="kv {tones.get(k, "")}"><span>{e(k)}</span><b>{e(v)}</b></div>'
                    for k, v in key_numbers(data))
    # percentiles down, one column per latency kind: fits a phone
    lat = latency_rows(r)
    lat_table = _table(["percentile"] + [t for t, _ in lat],
                       [[name] + [values[i] for _, values in lat]
                        for i, (_, name) in enumerate(LATENCY_KEYS)])
    codes = status_rows(r)
    codes_html = _table(["status / error", "count"], [list(c) for c in codes]) if codes \
        else f"<p class=meta>{NO_RESPONSES}</p>"
    checks = threshold_rows(r)
    thresholds_html = ("<h2>Thresholds</h2>" + _table(
        ["threshold", "result", "actual"], [list(c) for c in checks],
        [["", "fail" if c[1] == "FAIL" else "", ""] for c in checks])) if checks else ""
    series = chart_series(data.get("seconds") or [])
    charts = (svg_chart("Throughput per second (responses, errors)", "req/s", series["xs"],
                        series["rps"])
              + svg_chart("Latency per second (p50 / p95 / p99)", "ms", series["xs"],
                          series["latency"])
              + svg_chart("Success rate per second", "%", series["xs"], series["success"],
                          y_max=100.0))
    rule = r.get("success_rule") or ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{e(title)} <span class="status {e(status_class)}">{e(status)}</span>{pill}</h1>
<div class="meta">{e(data.get('method') or r.get('method') or 'GET')} {e(data.get('url') or '')}</div>
<div class="meta">run {e(str(data.get('run_id') or ''))} &middot; {e(data['uuid'])} &middot;
{e(run_times(data))}</div>
{verdict_box}<div class="summary">{e(data.get('summary') or '')}</div>
<h2>Key numbers</h2><div class="grid4">{cards}</div>
<h2>Latency</h2>{lat_table}
<h2>Status codes and errors</h2>{codes_html}
<p class="meta">{e(rule)}</p>{thresholds_html}{traffic_html(r)}
<h2>Per second</h2>{charts}
<footer>loadtester {e(__version__)} &middot; times in UTC &middot; latency measured from the
request's first byte written (intended send time in open loop) to the response's last byte
read.</footer>
</main></body></html>
"""
