// The charts of the run and compare pages (uPlot): one legend table under each chart that
// always shows every series' last, min and max (the value under the cursor while hovering),
// a crosshair shared by the charts of one group, zoom by dragging across a chart (all charts
// of the group follow; double-click zooms out), and a note instead of blank axes when a chart
// has nothing to draw.
import { el } from "/static/app.js";

const groups = new Map();          // group name -> Set of Chart

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export function withAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

function chartSize(node) {
  const width = Math.max(200, Math.floor(node.clientWidth || node.parentElement.clientWidth || 600));
  return { width, height: width < 480 ? 180 : 220 };
}

/**
 * spec: {
 *   series: [{label, color, fmt, fill?, width?, dash?}],
 *   group?: crosshair and zoom shared with the charts of this name,
 *   xValues?(u, vals), xIncrs?, xLabel?, xFmt?(v): the x axis (default: seconds),
 *   yValues?(u, vals), yRange?(u, min, max), yIncrs?,
 *   xSpan?(): [lo, hi] the x axis covers at least (a running test's whole duration),
 *   empty?: the note shown when no series has a value ("no responses"),
 * }
 */
export class Chart {
  constructor(node, spec) {
    this.node = node;
    this.spec = spec;
    this.data = [[], ...spec.series.map(() => [])];
    this.zoom = null;
    this.plot = null;
    this.legend = el("table", { class: "chart-legend" });
    this.emptyNote = el("p", { class: "chart-empty muted", hidden: true }, spec.empty || "no data");
    this.hoverIdx = null;
    if (spec.group) {
      if (!groups.has(spec.group)) groups.set(spec.group, new Set());
      groups.get(spec.group).add(this);
    }
    this.build();
  }

  build() {
    const node = this.node;
    if (this.plot) this.plot.destroy();
    node.replaceChildren();
    if (typeof window.uPlot !== "function") {
      node.textContent = "Charts unavailable (uPlot did not load).";
      return;
    }
    const spec = this.spec;
    const axis = cssVar("--chart-axis") || "#888";
    const grid = cssVar("--chart-grid") || "rgba(128,128,128,.2)";
    const font = `12px ${cssVar("--font-sans") || "system-ui, sans-serif"}`;
    const axisBase = { stroke: axis, font, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1, size: 4 } };
    const opts = {
      ...chartSize(node),
      scales: {
        x: { time: false, range: (u, min, max) => this.xRange(min, max) },
        y: { range: spec.yRange || ((u, min, max) => [0, Math.max(1, (max || 0) * 1.1)]) },
      },
      axes: [
        { ...axisBase, size: 32, values: spec.xValues || ((u, vals) => vals.map((v) => `${v}s`)),
          ...(spec.xIncrs ? { incrs: spec.xIncrs } : { incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800] }) },
        { ...axisBase, values: spec.yValues, size: 64, ...(spec.yIncrs ? { incrs: spec.yIncrs } : {}) },
      ],
      series: [{ label: spec.xLabel || "Time" }, ...spec.series.map((s) => ({
        label: s.label, stroke: s.color, width: s.width || 2, fill: s.fill, dash: s.dash,
        points: { show: false }, spanGaps: true,
      }))],
      legend: { show: false },
      cursor: {
        ...(spec.group ? { sync: { key: spec.group } } : {}),
        drag: { x: true, y: false, setScale: false },
        points: { size: 6 },
      },
      hooks: {
        setCursor: [(u) => this.renderLegend(u.cursor.idx)],
        setSelect: [(u) => this.onSelect(u)],
      },
    };
    const holder = el("div", { class: "chart-plot" });
    node.append(holder, this.emptyNote, this.legend);
    this.plot = new window.uPlot(opts, this.data, holder);
    // double-click zooms out (capture: before uPlot's own handler resets the scale)
    holder.addEventListener("dblclick", () => this.zoomGroup(null), true);
    this.renderLegend(null);
    this.syncEmpty();
  }

  xRange(min, max) {
    if (this.zoom) return this.zoom;
    const span = this.spec.xSpan ? this.spec.xSpan() : null;
    let lo = min == null ? 0 : min;
    let hi = max == null ? 1 : max;
    if (span) { lo = Math.min(lo, span[0]); hi = Math.max(hi, span[1]); }
    if (hi <= lo) hi = lo + 1;
    return [lo, hi];
  }

  onSelect(u) {
    const sel = u.select;
    if (!sel || sel.width < 4) return;
    const lo = u.posToVal(sel.left, "x");
    const hi = u.posToVal(sel.left + sel.width, "x");
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    if (hi - lo > 0) this.zoomGroup([lo, hi]);
  }

  zoomGroup(range) {
    const members = this.spec.group ? groups.get(this.spec.group) : new Set([this]);
    for (const chart of members) chart.zoomTo(range);
  }

  zoomTo(range) {
    this.zoom = range;
    this.node.dataset.zoomed = range ? "1" : "";
    if (!this.plot) return;
    const xs = this.data[0];
    const [lo, hi] = range || this.xRange(xs.length ? xs[0] : null, xs.length ? xs[xs.length - 1] : null);
    this.plot.setScale("x", { min: lo, max: hi });
  }

  setData(xs, columns) {
    this.data = [xs, ...columns];
    if (this.plot) this.plot.setData(this.data, !this.zoom);
    if (this.zoom && this.plot) this.plot.setScale("x", { min: this.zoom[0], max: this.zoom[1] });
    this.renderLegend(this.hoverIdx);
    this.syncEmpty();
  }

  hasValues() {
    return this.data.slice(1).some((col) => col.some(isNum));
  }

  syncEmpty() {
    const empty = !this.hasValues();
    this.emptyNote.hidden = !empty;
    this.node.dataset.empty = empty ? "1" : "";
  }

  setEmptyText(text) { this.emptyNote.textContent = text; }

  renderLegend(idx) {
    this.hoverIdx = idx == null ? null : idx;
    const spec = this.spec;
    const xs = this.data[0];
    const hovering = idx != null && idx < xs.length;
    const xFmt = spec.xFmt || ((v) => `${v}s`);
    const head = el("tr", {},
      el("th", {}, ""),
      el("th", { class: "num" }, hovering ? `at ${xFmt(xs[idx])}` : "last"),
      el("th", { class: "num" }, "min"),
      el("th", { class: "num" }, "max"));
    const rows = spec.series.map((s, i) => {
      const col = this.data[i + 1] || [];
      const values = col.filter(isNum);
      let shown = null;
      if (hovering) shown = col[idx];
      else for (let k = col.length - 1; k >= 0; k -= 1) if (isNum(col[k])) { shown = col[k]; break; }
      const fmt = s.fmt || String;
      const cell = (v) => el("td", { class: "num" }, isNum(v) ? fmt(v) : "–");
      const marker = el("span", { class: "legend-marker" });
      marker.style.background = s.color;          // CSSOM: allowed under the page's CSP
      return el("tr", { dataset: { series: s.label } },
        el("th", { scope: "row" }, marker, s.label),
        cell(shown),
        cell(values.length ? Math.min(...values) : null),
        cell(values.length ? Math.max(...values) : null));
    });
    this.legend.replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
  }

  resize() {
    if (!this.plot) return;
    const size = chartSize(this.node);
    if (size.width !== this.plot.width || size.height !== this.plot.height) this.plot.setSize(size);
  }
}

/** Resize `charts` with their containers. */
export function watchSizes(charts) {
  if (typeof ResizeObserver !== "function") return;
  const observer = new ResizeObserver(() => { for (const chart of charts()) chart.resize(); });
  for (const chart of charts()) observer.observe(chart.node);
}

// ---------------------------------------------------------------- latency distribution
// x: "nines", -log10(1 - p): 0 = p0, 1 = p90, 2 = p99 ... (HdrHistogram's percentile plot)

export function nines(percentile) {
  return -Math.log10(1 - Math.min(percentile, 99.9999) / 100);
}

const NINES_LABELS = ["p0", "p90", "p99", "p99.9", "p99.99", "p99.999"];

export function percentileLabel(x) {
  const p = 100 * (1 - 10 ** -x);
  return p >= 99 ? `p${+p.toFixed(4)}` : `p${+p.toFixed(1)}`;
}

export const DISTRIBUTION_AXIS = {
  xValues: (u, vals) => vals.map((v) => (Number.isInteger(v) && NINES_LABELS[v]) || ""),
  xIncrs: [1],
  xLabel: "Percentile",
  xFmt: percentileLabel,
};

/** [[x...], [ms...]] of one run's latency_distribution (the maximum left out). */
export function distributionPoints(points) {
  const usable = (points || []).filter((p) => p.percentile < 100);
  return [usable.map((p) => nines(p.percentile)), usable.map((p) => p.ms)];
}
