"""A run's report as a PDF (fpdf2, charts drawn with lines), from the same `data` dict as
htmlreport (loadtester.reports.data.report_data).  Text is set in DejaVu Sans (Debian's
fonts-dejavu-core, which `make test` and the image install), so labels and URLs in any script
it covers print as written; without it, in the core Helvetica font, reduced to Latin-1 (anything
else becomes '?')."""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from loadtester import __version__
from loadtester.reports import content
from loadtester.reports.charts import Chart, chart_series, has_values, tick_label

UNICODE_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
# style -> file (fonts-dejavu-core has no oblique: italic notes are set upright)
UNICODE_FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf", "I": "DejaVuSans.ttf"}
UNICODE = all((UNICODE_FONT_DIR / name).is_file() for name in UNICODE_FONT_FILES.values())
FONT = "DejaVu" if UNICODE else "Helvetica"


def _latin1(text) -> str:
    """Text as the font can set it: as it is in DejaVu, reduced to Latin-1 in Helvetica."""
    if UNICODE:
        return str(text)
    return str(text).encode("latin-1", "replace").decode("latin-1")


def _hex_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


RED = (153, 27, 27)
TONE_FILL = {"bad": (254, 226, 226), "good": (220, 252, 231), "neutral": (229, 231, 235)}


def _fit(pdf, text: str, width: float) -> str:
    """text cut (with '...') to fit `width` in the current font."""
    text = _latin1(text)
    if pdf.get_string_width(text) <= width:
        return text
    while text and pdf.get_string_width(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _pdf_table(pdf, rows: list[list[str]], widths: list[float], size: float = 9,
               red_cells: Collection[tuple[int, int]] = (), left_columns: int = 1) -> None:
    """rows[0] is the header; the first `left_columns` columns are left-aligned, the others
    right-aligned; red_cells: (row, column) shown in red."""
    line_h = 5.5
    for index, row in enumerate(rows):
        is_header = index == 0
        pdf.set_font(FONT, "B" if is_header else "", size)
        if is_header:
            pdf.set_fill_color(243, 244, 246)
        for col, (cell, w) in enumerate(zip(row, widths)):
            pdf.set_text_color(*(RED if (index, col) in red_cells else (17, 24, 39)))
            pdf.cell(w, line_h, _fit(pdf, cell, w - 2), border=1,
                     align="L" if col < left_columns else "R", fill=is_header)
        pdf.ln(line_h)
    pdf.set_text_color(17, 24, 39)


def _pdf_note(pdf, text: str, width: float) -> None:
    pdf.set_font(FONT, "I", 8)
    pdf.set_text_color(107, 114, 128)
    pdf.multi_cell(width, 4.5, _latin1(text.replace("\u2026", "...")), new_x="LMARGIN",
                   new_y="NEXT", align="L")
    pdf.set_text_color(17, 24, 39)


def _pdf_traffic(pdf, report: dict, width: float) -> None:
    """What a shaped run sent and its per-target (or per-step) table, as htmlreport shows
    them (content.traffic_rows, content.target_table); nothing for a plain run."""
    facts = content.traffic_rows(report)
    if facts:
        pdf.set_font(FONT, "B", 12)
        pdf.cell(width, 7, "Traffic", new_x="LMARGIN", new_y="NEXT")
        listed = [[label, text] for label, text in facts if label]
        _pdf_table(pdf, [["", "What was sent"]] + listed, [36, width - 36], left_columns=2)
        for label, text in facts:
            if not label:                        # the line that says what a cut list left out
                _pdf_note(pdf, text, width)
        pdf.ln(5)
    table = content.target_table(report)
    if table is not None:
        title, head, rows, note = table
        pdf.set_font(FONT, "B", 12)
        pdf.cell(width, 7, title, new_x="LMARGIN", new_y="NEXT")
        numbers = [{"Weight": 14.0, "Errors": 14.0, "Share": 16.0, "Requests": 20.0}.get(name, 18.0)
                   for name in head[1:]]
        _pdf_table(pdf, [head] + rows, [width - sum(numbers)] + numbers, size=8)
        if note:
            _pdf_note(pdf, note, width)
        pdf.ln(5)


def _pdf_chart(pdf, title: str, unit: str, xs: list, series, *, y_max=None,
               height: float = 54) -> None:
    empty = not has_values(series)
    if empty:
        height = 22
    if pdf.get_y() + height + 14 > pdf.h - pdf.b_margin:
        pdf.add_page()
    x0 = pdf.l_margin
    width = pdf.w - pdf.l_margin - pdf.r_margin
    top = pdf.get_y()
    pdf.set_font(FONT, "B", 10)
    pdf.set_text_color(17, 24, 39)
    pdf.text(x0, top + 4, _latin1(title))
    if empty:                                   # a note, not blank axes
        pdf.set_draw_color(229, 231, 235)
        pdf.rect(x0, top + 7, width, height - 9)
        pdf.set_font(FONT, "I", 9)
        pdf.set_text_color(107, 114, 128)
        note = content.NO_RESPONSES if xs else "no per-second data stored"
        pdf.text(x0 + width / 2 - pdf.get_string_width(note) / 2, top + 7 + (height - 9) / 2 + 1,
                 note)
        pdf.set_text_color(17, 24, 39)
        pdf.set_draw_color(0, 0, 0)
        pdf.set_y(top + height + 4)
        return
    # legend, right-aligned
    pdf.set_font(FONT, "", 8)
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
    pdf.set_font(FONT, "", 7)
    pdf.set_text_color(107, 114, 128)
    for t in chart.y_ticks():
        y = chart.py(t)
        pdf.set_draw_color(229, 231, 235)
        pdf.line(chart.left, y, chart.left + chart.width, y)
        label = tick_label(t)
        pdf.text(chart.left - 1.5 - pdf.get_string_width(label), y + 1, label)
    pdf.set_draw_color(156, 163, 175)
    pdf.line(chart.left, base, chart.left + chart.width, base)
    pdf.line(chart.left, chart.top, chart.left, base)
    for t in chart.x_ticks():
        x = chart.px(t)
        pdf.line(x, base, x, base + 1.2)
        label = tick_label(t)
        pdf.text(x - pdf.get_string_width(label) / 2, base + 4.5, label)
    pdf.text(chart.left - 12, chart.top - 1.5, _latin1(unit))
    caption = "second of the run"
    pdf.text(chart.left + chart.width - pdf.get_string_width(caption), base + 8, caption)
    for _name, color, ys in series:
        pdf.set_draw_color(*_hex_rgb(color))
        pdf.set_fill_color(*_hex_rgb(color))
        pdf.set_line_width(0.5)
        for seg in chart.segments(ys):
            if len(seg) == 1:
                pdf.circle(x=seg[0][0], y=seg[0][1], radius=0.8, style="F")
            else:
                for (xa, ya), (xb, yb) in zip(seg, seg[1:]):
                    pdf.line(xa, ya, xb, yb)
    pdf.set_text_color(17, 24, 39)
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(0.2)
    pdf.set_y(top + height + 4)


def render_pdf(data: dict) -> bytes:
    from fpdf import FPDF

    r = data["report"]
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    if UNICODE:
        for style, name in UNICODE_FONT_FILES.items():
            pdf.add_font(FONT, style, str(UNICODE_FONT_DIR / name))
    pdf.set_auto_page_break(True, margin=14)
    pdf.set_margins(16, 14, 16)
    pdf.set_title(_latin1(f"Load test {data['uuid']}"))
    pdf.set_creator(f"loadtester {__version__}")
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    pdf.set_font(FONT, "B", 18)
    title = f"Load test report{': ' + data['label'] if data.get('label') else ''}"
    pdf.multi_cell(width, 9, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 9)
    pdf.set_text_color(107, 114, 128)
    pdf.multi_cell(width, 5, _latin1(f"{data.get('method') or r.get('method') or 'GET'} "
                                     f"{data.get('url') or ''}"), new_x="LMARGIN", new_y="NEXT",
                   align="L")
    pdf.multi_cell(width, 5, _latin1(f"run {data.get('run_id')}  {data['uuid']}  status "
                                     f"{data.get('status')}  {content.run_times(data)}"),
                   new_x="LMARGIN", new_y="NEXT", align="L")
    pdf.set_text_color(17, 24, 39)
    pdf.ln(3)
    verdict = content.result_line(data)
    if verdict is not None:
        title_, tone, reason = verdict
        pdf.set_fill_color(*TONE_FILL[tone])
        pdf.set_text_color(*(RED if tone == "bad" else (17, 24, 39)))
        pdf.set_font(FONT, "B", 11)
        pdf.multi_cell(width, 6, _latin1(f"{title_}: {reason}" if reason else title_), fill=True,
                       new_x="LMARGIN", new_y="NEXT", padding=2, align="L")
        pdf.set_text_color(17, 24, 39)
        pdf.ln(2)
    pdf.set_fill_color(238, 242, 255)
    pdf.set_font(FONT, "B", 10)
    pdf.multi_cell(width, 6, _latin1(data.get("summary") or ""), fill=True, new_x="LMARGIN",
                   new_y="NEXT", padding=2, align="L")
    pdf.ln(4)

    pdf.set_font(FONT, "B", 12)
    pdf.cell(width, 7, "Key numbers", new_x="LMARGIN", new_y="NEXT")
    numbers = content.key_numbers(data)
    half = (len(numbers) + 1) // 2
    rows = [["Metric", "Value", "Metric", "Value"]]
    for i in range(half):
        left = numbers[i]
        right = numbers[i + half] if i + half < len(numbers) else ("", "")
        rows.append([left[0], left[1], right[0], right[1]])
    col = width / 4
    for index, row in enumerate(rows):
        is_header = index == 0
        pdf.set_font(FONT, "B" if is_header else "", 9)
        pdf.set_fill_color(243, 244, 246)
        for c, cell in enumerate(row):
            failed = c % 2 == 1 and row[c - 1] == "Result" and verdict is not None \
                and verdict[1] == "bad"
            pdf.set_text_color(*(RED if failed else (17, 24, 39)))
            pdf.cell(col, 5.5, _latin1(cell), border=1, align="L" if c % 2 == 0 else "R",
                     fill=is_header or c % 2 == 0)
        pdf.ln(5.5)
    pdf.set_text_color(17, 24, 39)
    pdf.ln(4)

    pdf.set_font(FONT, "B", 12)
    pdf.cell(width, 7, "Latency percentiles", new_x="LMARGIN", new_y="NEXT")
    lat = content.latency_rows(r)
    first_w = 32 if len(lat) > 1 else 20
    other_w = (width - first_w) / len(content.LATENCY_KEYS)
    _pdf_table(pdf, [[""] + [name for _, name in content.LATENCY_KEYS]]
               + [[t] + values for t, values in lat],
               [first_w] + [other_w] * len(content.LATENCY_KEYS),
               size=8)
    pdf.ln(4)

    pdf.set_font(FONT, "B", 12)
    pdf.cell(width, 7, "Status codes and errors", new_x="LMARGIN", new_y="NEXT")
    codes = content.status_rows(r)
    if codes:
        _pdf_table(pdf, [["Status / error", "Count"]] + [list(c) for c in codes],
                   [width - 30, 30])
    else:
        pdf.set_font(FONT, "I", 9)
        pdf.cell(width, 6, content.NO_RESPONSES, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(5)

    checks = content.threshold_rows(r)
    if checks:
        pdf.set_font(FONT, "B", 12)
        pdf.cell(width, 7, "Thresholds", new_x="LMARGIN", new_y="NEXT")
        _pdf_table(pdf, [["Threshold", "Result", "Actual"]] + [list(c) for c in checks],
                   [width - 70, 25, 45],
                   red_cells={(i + 1, 1) for i, c in enumerate(checks) if c[1] == "FAIL"})
        pdf.ln(5)

    _pdf_traffic(pdf, r, width)
    series = chart_series(data.get("seconds") or [])
    _pdf_chart(pdf, "Throughput per second (responses, errors)", "req/s", series["xs"],
               series["rps"])
    _pdf_chart(pdf, "Latency per second (p50 / p95 / p99)", "ms", series["xs"], series["latency"])
    pdf.set_font(FONT, "", 7)
    pdf.set_text_color(156, 163, 175)
    pdf.multi_cell(width, 4, _latin1(f"loadtester {__version__}. {r.get('success_rule') or ''}. "
                                     "Latency: first byte written (intended send time in open "
                                     "loop) to last byte read. Times in UTC."),
                   new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
