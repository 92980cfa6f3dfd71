"""Reports for the web server: a self-contained HTML page (inline SVG charts, no JavaScript)
and a PDF (fpdf2, charts drawn with lines).

Both take the same `data` dict, built by loadtester.serve:

    {"uuid", "run_id", "label", "url" (already masked when the run asked for it), "method",
     "status", "started_at", "completed_at", "users", "duration", "summary" (one line),
     "report": the report dict (history.report_from_row / the --json output),
     "seconds": [{"second", "rps", "errors", "success_rate", "p50_ms", "p95_ms", "p99_ms"}]}

Every string that came from a user (URL, label, ...) is escaped in HTML; the PDF uses the core
Helvetica font, so text is reduced to Latin-1 (anything else becomes '?').
"""
from __future__ import annotations

import html
import math

from loadtester import __version__
from loadtester.analysis.report import LATENCY_COLUMNS
from loadtester.units import format_bytes, format_ms

LATENCY_KEYS = LATENCY_COLUMNS           # (latency_ms key, column name)
COLORS = {"rps": "#2563eb", "p50": "#16a34a", "p95": "#d97706", "p99": "#dc2626",
          "success": "#7c3aed"}


# --------------------------------------------------------------------------- numbers

def fmt_ms(value) -> str:
    return format_ms(value, sep=" ")


def fmt_int(value) -> str:
    return "-" if value is None else f"{int(value):,}"


def fmt_bytes(n) -> str:
    return format_bytes(n, sep=" ", digits=2)


def fmt_pct(fraction) -> str:
    return "-" if fraction is None else f"{fraction * 100:.2f}%"


def key_numbers(data: dict) -> list[tuple[str, str]]:
    r = data["report"]
    rows = [
        ("Status", str(data.get("status") or r.get("status") or "-")),
        ("Requests completed", fmt_int(r.get("requests"))),
        ("Attempts", fmt_int(r.get("attempts"))),
        ("Successes", fmt_int(r.get("successes"))),
        ("Errors", fmt_int(r.get("errors"))),
        ("Success rate", fmt_pct(r.get("success_rate"))),
        ("Throughput", f"{r.get('rps') or 0:,.2f} req/s"),
        ("Transfer", f"{fmt_bytes(r.get('bytes_per_s') or 0)}/s"),
        ("Measured duration", f"{r.get('duration_s') or 0:.2f} s"),
        ("Virtual users", fmt_int(data.get("users") if data.get("users") is not None
                                  else r.get("connections"))),
        ("Load model", f"open loop at {r['rate']:g} req/s" if r.get("mode") == "rate"
         else "closed loop"),
        ("Method", str(data.get("method") or r.get("method") or "GET")),
    ]
    return rows


def latency_rows(report: dict) -> list[tuple[str, list[str]]]:
    """[(title, [value per LATENCY_KEYS])]: corrected latency, and uncorrected in open loop."""
    out = [("Latency", [fmt_ms((report.get("latency_ms") or {}).get(k)) for k, _ in LATENCY_KEYS])]
    if report.get("uncorrected_latency_ms"):
        out[0] = ("Latency (corrected)", out[0][1])
        out.append(("Uncorrected", [fmt_ms(report["uncorrected_latency_ms"].get(k))
                                    for k, _ in LATENCY_KEYS]))
    return out


def status_rows(report: dict) -> list[tuple[str, str]]:
    rows = [(str(code), fmt_int(count)) for code, count in (report.get("status_codes") or {}).items()]
    rows += [(f"error: {kind}", fmt_int(count))
             for kind, count in (report.get("errors_by_kind") or {}).items()]
    return rows


# --------------------------------------------------------------------------- chart geometry

def nice_ceiling(value: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least value (and > 0)."""
    if not value or value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10 ** exponent
        if candidate >= value * (1 - 1e-9):
            return float(candidate)
    return float(10 ** (exponent + 1))


def _ticks(lo: float, hi: float, count: int, min_step: float = 0.0) -> list[float]:
    if hi <= lo:
        return [lo]
    step = max(min_step, nice_ceiling((hi - lo) / max(1, count)))
    first = math.ceil(lo / step) * step
    out, v = [], first
    while v <= hi + step * 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def _fmt_tick(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


class Chart:
    """Scales series of (x, y) values into a plot box; shared by the SVG and the PDF."""

    def __init__(self, xs: list, series: list[tuple[str, str, list]], *, y_max=None,
                 left: float, top: float, width: float, height: float):
        self.xs = list(xs)
        self.series = series
        self.left, self.top, self.width, self.height = left, top, width, height
        values = [v for _, _, ys in series for v in ys if v is not None]
        if y_max is None:
            highest = max(values) if values else 0.0
            top = highest if highest > 0 else 1.0
            self.y_step = nice_ceiling(top / 4)
            self.y_max = math.ceil(top / self.y_step - 1e-9) * self.y_step
            if highest > 0.95 * self.y_max:               # keep a flat line off the frame
                self.y_max += self.y_step
        else:
            self.y_max = float(y_max)
            self.y_step = nice_ceiling(self.y_max / 4)
        self.x_min = min(self.xs) if self.xs else 0
        self.x_max = max(self.xs) if self.xs else 1
        if self.x_max == self.x_min:
            self.x_min, self.x_max = self.x_min - 1, self.x_max + 1

    def px(self, x) -> float:
        return self.left + (x - self.x_min) / (self.x_max - self.x_min) * self.width

    def py(self, y) -> float:
        y = min(max(y, 0.0), self.y_max)
        return self.top + self.height - (y / self.y_max) * self.height

    def segments(self, ys: list) -> list[list[tuple[float, float]]]:
        """Runs of consecutive known values, as point lists (a None breaks the line)."""
        out: list[list[tuple[float, float]]] = []
        current: list[tuple[float, float]] = []
        for x, y in zip(self.xs, ys):
            if y is None:
                if current:
                    out.append(current)
                current = []
                continue
            current.append((self.px(x), self.py(y)))
        if current:
            out.append(current)
        return out

    def y_ticks(self) -> list[float]:
        count = int(round(self.y_max / self.y_step))
        return [round(i * self.y_step, 10) for i in range(count + 1)]

    def x_ticks(self) -> list[float]:
        if not self.xs:
            return []
        return [t for t in _ticks(self.x_min, self.x_max, 8, min_step=1.0)
                if self.x_min <= t <= self.x_max]


def chart_series(seconds: list[dict]) -> dict:
    """The three charts' series from timeseries rows."""
    xs = [s["second"] for s in seconds]
    return {
        "xs": xs,
        "rps": [("req/s", COLORS["rps"], [s.get("rps") for s in seconds])],
        "latency": [("p50", COLORS["p50"], [s.get("p50_ms") for s in seconds]),
                    ("p95", COLORS["p95"], [s.get("p95_ms") for s in seconds]),
                    ("p99", COLORS["p99"], [s.get("p99_ms") for s in seconds])],
        "success": [("success %", COLORS["success"],
                     [None if s.get("success_rate") is None else s["success_rate"] * 100
                      for s in seconds])],
    }


# --------------------------------------------------------------------------- HTML

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
                     f'<text x="{chart.left - 6}" y="{y + 4:.1f}" class="yt">{_fmt_tick(t)}</text>')
    base = chart.top + chart.height
    for t in chart.x_ticks():
        x = chart.px(t)
        parts.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" class="axis"/>'
                     f'<text x="{x:.1f}" y="{base + 17}" class="xt">{_fmt_tick(t)}</text>')
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


# --------------------------------------------------------------------------- PDF

def _latin1(text) -> str:
    return str(text).encode("latin-1", "replace").decode("latin-1")


def _hex_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def _pdf_table(pdf, rows: list[list[str]], widths: list[float]) -> None:
    """rows[0] is the header; the first column is left-aligned, the others right-aligned."""
    line_h = 5.5
    for index, row in enumerate(rows):
        is_header = index == 0
        pdf.set_font("Helvetica", "B" if is_header else "", 9)
        if is_header:
            pdf.set_fill_color(243, 244, 246)
        for col, (cell, w) in enumerate(zip(row, widths)):
            pdf.cell(w, line_h, _latin1(cell), border=1, align="L" if col == 0 else "R",
                     fill=is_header)
        pdf.ln(line_h)


def _pdf_chart(pdf, title: str, unit: str, xs: list, series, *, y_max=None,
               height: float = 54) -> None:
    if pdf.get_y() + height + 14 > pdf.h - pdf.b_margin:
        pdf.add_page()
    x0 = pdf.l_margin
    width = pdf.w - pdf.l_margin - pdf.r_margin
    top = pdf.get_y()
    pdf.set_font("Helvetica", "B", 10)
    pdf.set_text_color(17, 24, 39)
    pdf.text(x0, top + 4, _latin1(title))
    # legend, right-aligned
    pdf.set_font("Helvetica", "", 8)
    lx = x0 + width
    for name, color, _ in reversed(series):
        lx -= pdf.get_string_width(_latin1(name)) + 9
        pdf.set_draw_color(*_hex_rgb(color))
        pdf.set_line_width(0.8)
        pdf.line(lx, top + 3, lx + 5, top + 3)
        pdf.text(lx + 6, top + 4, _latin1(name))
    chart = Chart(xs, series, y_max=y_max, left=x0 + 14, top=top + 9, width=width - 16,
                  height=height - 20)
    base = chart.top + chart.height
    pdf.set_line_width(0.15)
    pdf.set_font("Helvetica", "", 7)
    pdf.set_text_color(107, 114, 128)
    for t in chart.y_ticks():
        y = chart.py(t)
        pdf.set_draw_color(229, 231, 235)
        pdf.line(chart.left, y, chart.left + chart.width, y)
        label = _fmt_tick(t)
        pdf.text(chart.left - 1.5 - pdf.get_string_width(label), y + 1, label)
    pdf.set_draw_color(156, 163, 175)
    pdf.line(chart.left, base, chart.left + chart.width, base)
    pdf.line(chart.left, chart.top, chart.left, base)
    for t in chart.x_ticks():
        x = chart.px(t)
        pdf.line(x, base, x, base + 1.2)
        label = _fmt_tick(t)
        pdf.text(x - pdf.get_string_width(label) / 2, base + 4.5, label)
    pdf.text(chart.left - 12, chart.top - 1.5, _latin1(unit))
    caption = "second of the run"
    pdf.text(chart.left + chart.width - pdf.get_string_width(caption), base + 8, caption)
    drawn = False
    for _name, color, ys in series:
        pdf.set_draw_color(*_hex_rgb(color))
        pdf.set_fill_color(*_hex_rgb(color))
        pdf.set_line_width(0.5)
        for seg in chart.segments(ys):
            drawn = True
            if len(seg) == 1:
                pdf.circle(x=seg[0][0], y=seg[0][1], radius=0.8, style="F")
            else:
                for (xa, ya), (xb, yb) in zip(seg, seg[1:]):
                    pdf.line(xa, ya, xb, yb)
    if not drawn:
        pdf.set_font("Helvetica", "I", 9)
        text = "no per-second data"
        pdf.text(chart.left + chart.width / 2 - pdf.get_string_width(text) / 2,
                 chart.top + chart.height / 2, text)
    pdf.set_text_color(17, 24, 39)
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(0.2)
    pdf.set_y(top + height + 4)


def render_pdf(data: dict) -> bytes:
    from fpdf import FPDF

    r = data["report"]
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=14)
    pdf.set_margins(16, 14, 16)
    pdf.set_title(_latin1(f"Load test {data['uuid']}"))
    pdf.set_creator(f"loadtester {__version__}")
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    pdf.set_font("Helvetica", "B", 18)
    title = f"Load test report{': ' + data['label'] if data.get('label') else ''}"
    pdf.multi_cell(width, 9, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.set_text_color(107, 114, 128)
    pdf.multi_cell(width, 5, _latin1(f"{data.get('method') or r.get('method') or 'GET'} "
                                     f"{data.get('url') or ''}"), new_x="LMARGIN", new_y="NEXT",
                   align="L")
    pdf.multi_cell(width, 5, _latin1(f"run {data.get('run_id')}  {data['uuid']}  status "
                                     f"{data.get('status')}  started {data.get('started_at') or '-'}"
                                     f"  ended {data.get('completed_at') or '-'}"),
                   new_x="LMARGIN", new_y="NEXT", align="L")
    pdf.set_text_color(17, 24, 39)
    pdf.ln(3)
    pdf.set_fill_color(238, 242, 255)
    pdf.set_font("Helvetica", "B", 10)
    pdf.multi_cell(width, 6, _latin1(data.get("summary") or ""), fill=True, new_x="LMARGIN",
                   new_y="NEXT", padding=2, align="L")
    pdf.ln(4)

    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(width, 7, "Key numbers", new_x="LMARGIN", new_y="NEXT")
    numbers = key_numbers(data)
    half = (len(numbers) + 1) // 2
    rows = [["Metric", "Value", "Metric", "Value"]]
    for i in range(half):
        left = numbers[i]
        right = numbers[i + half] if i + half < len(numbers) else ("", "")
        rows.append([left[0], left[1], right[0], right[1]])
    col = width / 4
    for index, row in enumerate(rows):
        is_header = index == 0
        pdf.set_font("Helvetica", "B" if is_header else "", 9)
        pdf.set_fill_color(243, 244, 246)
        for c, cell in enumerate(row):
            pdf.cell(col, 5.5, _latin1(cell), border=1, align="L" if c % 2 == 0 else "R",
                     fill=is_header or c % 2 == 0)
        pdf.ln(5.5)
    pdf.ln(4)

    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(width, 7, "Latency percentiles", new_x="LMARGIN", new_y="NEXT")
    lat = latency_rows(r)
    first_w = 34 if len(lat) > 1 else 22
    other_w = (width - first_w) / len(LATENCY_KEYS)
    _pdf_table(pdf, [[""] + [name for _, name in LATENCY_KEYS]]
               + [[t] + values for t, values in lat], [first_w] + [other_w] * len(LATENCY_KEYS))
    pdf.ln(4)

    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(width, 7, "Status codes and errors", new_x="LMARGIN", new_y="NEXT")
    codes = status_rows(r)
    if codes:
        _pdf_table(pdf, [["Status / error", "Count"]] + [list(c) for c in codes], [50, 40])
    else:
        pdf.set_font("Helvetica", "I", 9)
        pdf.cell(width, 6, "no responses", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(5)

    series = chart_series(data.get("seconds") or [])
    _pdf_chart(pdf, "Throughput per second", "req/s", series["xs"], series["rps"])
    _pdf_chart(pdf, "Latency per second (p50 / p99)", "ms", series["xs"],
               [s for s in series["latency"] if s[0] in ("p50", "p99")])
    pdf.set_font("Helvetica", "", 7)
    pdf.set_text_color(156, 163, 175)
    pdf.multi_cell(width, 4, _latin1(f"loadtester {__version__}. {r.get('success_rule') or ''}. "
                                     "Latency: first byte written (intended send time in open "
                                     "loop) to last byte read."), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
