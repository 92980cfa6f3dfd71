"""`loadtester plot`: one self-contained HTML page that overlays one or more stored runs (as
`vegeta plot` does): latency and throughput over time, and each run's latency distribution as
an HdrHistogram-style percentile curve.

Everything comes from the runs' stored per-second windows, read as a stream (a long run is
never all in memory).  The page's size is bounded whatever a run's length: a run longer than
MAX_POINTS seconds is drawn in buckets of several seconds, each bucket's percentiles taken from
its merged histograms (never averaged percentiles), and the percentile curve has a fixed number
of points.  uPlot (vendored under web/static/vendor) is inlined and a Content-Security-Policy
forbids every request: the file opens anywhere, offline."""
from __future__ import annotations

import html
import json
import math
from importlib import resources
from typing import Any

import apsw

from loadtester import __version__
from loadtester.analysis import aggregate
from loadtester.store import queries

Row = dict[str, Any]

MAX_POINTS = 1000                   # per run and time chart
CURVE_STEP = 10 ** 0.1              # the spacing of aggregate.CURVE_PERCENTILES on the x axis
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")
VENDOR = ("web", "static", "vendor")


def run_name(row: Row) -> str:
    return f"run {row['id']}" + (f" {row['label']}" if row.get("label") else "")


def _ms(value_us: float) -> float:
    return round(value_us / 1000, 3)


def _bucket_point(start_s: int, width_s: int, totals: aggregate.Totals) -> dict[str, Any]:
    """One point of the time charts: the bucket's end (seconds since the run's start), its
    responses and errors (attempts that were not successes) per second, p50 and p99 (ms)."""
    latency = totals.latency
    known = latency.total > 0
    return {"t": start_s + width_s, "rps": round(totals.counters.responses / width_s, 3),
            "errors": round((totals.requests - totals.counters.successes) / width_s, 3),
            "p50": _ms(latency.value_at_percentile(50)) if known else None,
            "p99": _ms(latency.value_at_percentile(99)) if known else None}


def percentile_curve(totals: aggregate.Totals) -> list[tuple[float, float]]:
    """[(x, latency ms)] of aggregate.percentile_curve, x = 1 / (1 - percentile/100): the axis
    of HdrHistogram's percentile plots (log, 90, 99, 99.9 ... evenly spaced); the maximum (p100)
    one step past the last percentile."""
    points: list[tuple[float, float]] = []
    for point in aggregate.percentile_curve(totals.latency):
        p = point["percentile"]
        x = 1 / (1 - p / 100) if p < 100 else points[-1][0] * CURVE_STEP
        points.append((round(x, 4), round(point["ms"], 3)))
    return points


def run_plot_data(conn: apsw.Connection, row: Row) -> dict[str, Any]:
    """What the page draws of the run `row`: its time points and percentile curve."""
    span = queries.window_second_span(conn, row["id"])
    points: list[dict[str, Any]] = []
    overall = aggregate.Totals()
    width = 1
    if span is not None:
        first, last = span
        width = max(1, math.ceil((last - first + 1) / MAX_POINTS))
        bucket, current = None, aggregate.Totals()

        def close(index: int) -> None:
            start = first + index * width                # the last bucket may be shorter
            points.append(_bucket_point(start, min(width, last + 1 - start), current))
            overall.merge(current)
        for window in queries.iter_run_windows(conn, row["id"]):
            index = (window["second"] - first) // width
            if index != bucket:
                if bucket is not None:
                    close(bucket)
                bucket, current = index, aggregate.Totals()
            current.add(window)
        if bucket is not None:
            close(bucket)
    return {"name": run_name(row), "uuid": row["uuid"], "url": row.get("url"),
            "status": row.get("status"), "bucket_s": width, "points": points,
            "curve": percentile_curve(overall), "requests": overall.requests}


def without_seconds_line(rows: list[Row]) -> str:
    """Which of the runs `rows` stored no per-second data, and why when it is known: 'run 3
    stored no per-second data (--store none)', 'runs 3 and 4 stored ...'."""
    ids = [str(row["id"]) for row in rows]
    named = (f"run {ids[0]}" if len(ids) == 1
             else f"runs {', '.join(ids[:-1])} and {ids[-1]}")
    unstored = [str(row["id"]) for row in rows if row.get("store_mode") == "none"]
    if len(unstored) == len(ids):
        why = " (--store none)"
    elif unstored:                   # the others stopped before their first second was stored
        why = f" (run{'s' if len(unstored) > 1 else ''} {', '.join(unstored)}: --store none)"
    else:
        why = ""
    return f"{named} stored no per-second data{why}"


def _vendor_text(name: str) -> str:
    return resources.files("loadtester").joinpath(*VENDOR, name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element."""
    return (json.dumps(value, separators=(",", ":"), allow_nan=False)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


CSS = """
:root{color-scheme:light dark;--fg:#111827;--muted:#6b7280;--bg:#f9fafb;--card:#fff;--line:#e5e7eb}
@media (prefers-color-scheme:dark){:root{--fg:#e5e7eb;--muted:#9ca3af;--bg:#0b1020;--card:#111827;
 --line:#374151}}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
 background:var(--bg);margin:0}
main{max-width:1100px;margin:0 auto;padding:16px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:20px 0 6px}
.meta{color:var(--muted);font-size:12px;overflow-wrap:anywhere}
.runs{list-style:none;padding:0;margin:8px 0;display:flex;flex-wrap:wrap;gap:6px 16px}
.runs li{display:flex;gap:6px;align-items:baseline;overflow-wrap:anywhere}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;flex:none}
.chart{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:6px 0;
 min-height:60px;margin:12px 0}
.empty{color:var(--muted);padding:16px}
.uplot{color:var(--fg)}
.legend{border-collapse:collapse;margin:4px 12px 6px;font-size:12px;font-variant-numeric:tabular-nums}
.legend td{padding:2px 10px 2px 0;text-align:right;white-space:nowrap}
.legend td:first-child{text-align:left;white-space:normal;overflow-wrap:anywhere}
.legend thead td{color:var(--muted)}
.legend .swatch{width:14px;height:0;border-top:2px solid;border-radius:0;margin-right:6px;
 vertical-align:middle}
.legend .swatch.dashed{border-top-style:dashed}
footer{color:var(--muted);font-size:12px;margin-top:20px}
"""

SCRIPT = """
(function () {
  "use strict";
  const runs = JSON.parse(document.getElementById("plot-data").textContent);
  const dark = matchMedia("(prefers-color-scheme: dark)").matches;
  const axisColor = dark ? "#9ca3af" : "#4b5563", gridColor = dark ? "#1f2937" : "#eef0f3";
  const charts = [];
  function axes(xLabel, yLabel, xTicks) {
    const x = Object.assign({label: xLabel, stroke: axisColor, grid: {stroke: gridColor},
                             ticks: {stroke: gridColor}}, xTicks || {});
    return [x, {label: yLabel, stroke: axisColor, grid: {stroke: gridColor},
                ticks: {stroke: gridColor}, size: 72}];
  }
  function aligned(lists) {
    // one x array for all series (uPlot's shape), null where a series has no point at that x
    const xs = Array.from(new Set(lists.flatMap(l => l.map(p => p[0])))).sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    return [xs, ...lists.map(l => {
      const ys = new Array(xs.length).fill(null);
      for (const [x, y] of l) ys[index.get(x)] = y;
      return ys;
    })];
  }
  function width(el) { return Math.max(280, el.clientWidth); }
  function formatValue(v, unit) {
    if (v === null) return "-";
    if (unit !== "ms") return (Math.round(v * 10) / 10).toLocaleString("en-US");
    if (v < 1) return Math.round(v * 1000) + " \u00b5s";
    return v < 1000 ? v.toFixed(2) + " ms" : (v / 1000).toFixed(2) + " s";
  }
  const STATS = {
    min: ys => ys.reduce((a, b) => Math.min(a, b)),
    max: ys => ys.reduce((a, b) => Math.max(a, b)),
    last: ys => ys[ys.length - 1],
  };
  function legend(el, series, data, unit, stats) {
    // always on, as the web app's: a static page has no hover on a phone or in print
    const table = document.createElement("table");
    table.className = "legend";
    const head = table.createTHead().insertRow();
    for (const name of ["", ...stats]) head.insertCell().textContent = name;
    series.forEach((s, i) => {
      const ys = data[i + 1].filter(v => v !== null);
      const row = table.createTBody().insertRow();
      const label = row.insertCell();
      const swatch = document.createElement("span");
      swatch.className = "swatch" + (s.dash ? " dashed" : "");
      swatch.style.borderColor = s.stroke;
      label.append(swatch, s.label);
      for (const stat of stats)
        row.insertCell().textContent = ys.length ? formatValue(STATS[stat](ys), unit) : "-";
    });
    el.append(table);
  }
  function draw(id, title, xLabel, yLabel, series, lists, opts, stats) {
    const el = document.getElementById(id);
    if (!lists.some(l => l.length)) {
      el.innerHTML = '<div class="empty">no responses</div>';
      return;
    }
    const data = aligned(lists);
    const chart = new uPlot(Object.assign({
      title: title, width: width(el), height: 300, legend: {show: false},
      scales: {x: {time: false}, y: {range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1]}},
      axes: axes(xLabel, yLabel), series: [{label: xLabel}].concat(series),
    }, opts || {}), data, el);
    charts.push(chart);
    legend(el, series, data, yLabel, stats || ["last", "min", "max"]);
  }
  const latencySeries = [], latencyLists = [], rpsSeries = [], rpsLists = [],
        curveSeries = [], curveLists = [];
  runs.forEach((run, i) => {
    const color = run.color;
    const pts = run.points;
    latencySeries.push({label: run.name + " p99", stroke: color, width: 2, spanGaps: true},
                       {label: run.name + " p50", stroke: color, width: 1, dash: [6, 4], spanGaps: true});
    latencyLists.push(pts.filter(p => p.p99 !== null).map(p => [p.t, p.p99]),
                      pts.filter(p => p.p50 !== null).map(p => [p.t, p.p50]));
    rpsSeries.push({label: run.name, stroke: color, width: 2, spanGaps: true},
                   {label: run.name + " errors", stroke: color, width: 1, dash: [2, 3],
                    spanGaps: true});
    rpsLists.push(pts.map(p => [p.t, p.rps]), pts.map(p => [p.t, p.errors]));
    curveSeries.push({label: run.name, stroke: color, width: 2, spanGaps: true});
    curveLists.push(run.curve);
  });
  draw("latency", "Latency over time (p99 solid, p50 dashed)", "seconds since start", "ms",
       latencySeries, latencyLists);
  draw("throughput", "Throughput over time (responses solid, errors dotted)",
       "seconds since start", "per second",
       rpsSeries, rpsLists);
  const percent = x => {
    const p = 100 * (1 - 1 / x);
    return (Math.round(p * 10000) / 10000) + "%";
  };
  const nines = (u, axis, min, max) => {
    // one tick per "nine": 0%, 90%, 99%, 99.9% ... (x = 1 / (1 - p))
    const out = [];
    for (let x = 1; x <= max * 1.0001; x *= 10) if (x >= min / 1.0001) out.push(x);
    return out;
  };
  draw("distribution", "Latency by percentile", "percentile", "ms", curveSeries, curveLists, {
    scales: {x: {time: false, distr: 3, log: 10},
             y: {range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1]}},
    axes: axes("percentile", "ms", {splits: nines, values: (u, splits) => splits.map(percent)}),
  }, ["min", "max"]);
  let resizing = null;
  addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => charts.forEach(c => c.setSize({
      width: width(c.root.parentElement), height: 300})), 100);
  });
  window.loadtesterPlot = {runs: runs.map(r => r.name), charts: charts};
})();
"""

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data:")


def render_plot(runs: list[dict[str, Any]]) -> str:
    """The page for runs (run_plot_data of each, each with per-second points: `plot` leaves
    out, and names, those without), in the order given."""
    e = html.escape
    for index, run in enumerate(runs):
        run["color"] = PALETTE[index % len(PALETTE)]
    items = "".join(
        f'<li><span class="swatch" style="background:{run["color"]}"></span>'
        f'<span><b>{e(run["name"])}</b> {e(str(run.get("url") or ""))} &middot; '
        f'{run["requests"]:,} requests, {e(str(run.get("status") or ""))}'
        + (f' &middot; points of {run["bucket_s"]} s' if run["bucket_s"] > 1 else "")
        + "</span></li>" for run in runs)
    title = "loadtester plot: " + ", ".join(run["name"] for run in runs)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)}</title>
<style>{_vendor_text("uPlot.min.css")}</style><style>{CSS}</style></head>
<body><main>
<h1>{e(title)}</h1>
<ul class="runs">{items}</ul>
<div class="chart" id="latency"></div>
<div class="chart" id="throughput"></div>
<div class="chart" id="distribution"></div>
<p class="meta">Time runs from each run's first stored second; percentiles per point are taken
from the merged histograms of its seconds.  The percentile axis is logarithmic in 1/(1-p), as
HdrHistogram plots it.</p>
<footer>loadtester {e(__version__)}</footer>
</main>
<script id="plot-data" type="application/json">{_script_json(runs)}</script>
<script>{_vendor_text("uPlot.iife.min.js")}</script>
<script>{SCRIPT}</script>
</body></html>
"""
