// `/test/{uuid}`: live overview and charts from the SSE stream while the run goes on;
// a finished run is drawn from /api/timeseries and /api/metrics.
import {
  api, el, withToken, fmtBytes, fmtDate, fmtInt, fmtMs, fmtPct, fmtRps, fmtSeconds, initTheme, onThemeChange,
  setBadge,
} from "/static/app.js";

const $ = (id) => document.getElementById(id);
const uuid = decodeURIComponent(window.location.pathname.replace(/\/+$/, "").split("/").pop() || "");

const STATUS_POLL_MS = 1000;
const METRICS_POLL_MS = 2000;

const state = {
  status: null,            // last /api/status answer
  seconds: new Map(),      // second -> window row
  finished: false,
  stream: null,
  timers: [],
  liveMetrics: true,       // /api/metrics answers while running; false once it did not
  charts: {},
};

// ------------------------------------------------------------------ charts

const SERIES_COLORS = {
  rps: "#3b82f6",
  errors: "#ef4444",
  p50: "#10b981",
  p95: "#f59e0b",
  p99: "#ef4444",
  success: "#8b5cf6",
};

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function withAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function line(label, color, extra = {}) {
  return { label, stroke: color, width: 2, points: { show: false }, spanGaps: true, ...extra };
}

const CHARTS = {
  rps: {
    el: "rps-chart",
    series: () => [
      line("RPS", SERIES_COLORS.rps, { fill: withAlpha(SERIES_COLORS.rps, 0.14), value: (u, v) => fmtRps(v) }),
      line("Errors/s", SERIES_COLORS.errors, { width: 1.5, value: (u, v) => fmtInt(v) }),
    ],
    yValues: (u, vals) => vals.map((v) => (v >= 1000 ? `${(v / 1000).toFixed(1)}k` : String(v))),
    columns: (rows) => [rows.map((r) => r.rps ?? null), rows.map((r) => r.errors ?? null)],
    range: (u, min, max) => [0, Math.max(1, max * 1.1)],
  },
  latency: {
    el: "latency-chart",
    series: () => [
      line("p50", SERIES_COLORS.p50, { value: (u, v) => fmtMs(v) }),
      line("p95", SERIES_COLORS.p95, { value: (u, v) => fmtMs(v) }),
      line("p99", SERIES_COLORS.p99, { value: (u, v) => fmtMs(v) }),
    ],
    yValues: (u, vals) => vals.map((v) => `${+v.toFixed(2)} ms`),
    columns: (rows) => [rows.map((r) => r.p50_ms ?? null), rows.map((r) => r.p95_ms ?? null),
                        rows.map((r) => r.p99_ms ?? null)],
    range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.1)],
  },
  success: {
    el: "success-chart",
    series: () => [
      line("Success", SERIES_COLORS.success, { fill: withAlpha(SERIES_COLORS.success, 0.12),
                                              value: (u, v) => (v == null ? "–" : `${v.toFixed(1)}%`) }),
    ],
    yValues: (u, vals) => vals.map((v) => `${v}%`),
    columns: (rows) => [rows.map((r) => (typeof r.success_rate === "number" ? r.success_rate * 100 : null))],
    // 100% sits just below the top edge, not on it
    range: (u, min, max) => [Math.max(0, Math.min(90, Math.floor((min ?? 100) / 10) * 10)), 100.8],
    yIncrs: [1, 2, 5, 10, 20, 25, 50],
  },
};

function sortedRows() {
  return [...state.seconds.values()].sort((a, b) => a.second - b.second);
}

function chartData(spec, rows) {
  return [rows.map((r) => r.second), ...spec.columns(rows)];
}

function chartSize(node) {
  const width = Math.max(240, Math.floor(node.clientWidth || node.parentElement.clientWidth || 600));
  return { width, height: width < 480 ? 180 : 220 };
}

// a running test's charts span its whole duration, so they fill up from the left as it goes
function xRange(u, min, max) {
  const st = state.status || {};
  const duration = st.status === "running" && typeof st.duration === "number" ? st.duration : 0;
  const lo = min == null ? 0 : Math.min(min, 1);
  const hi = Math.max(max == null ? 1 : max, duration, lo + 1);
  return [lo, hi];
}

function makeChart(key) {
  const spec = CHARTS[key];
  const node = $(spec.el);
  if (typeof window.uPlot !== "function") {
    node.textContent = "Charts unavailable (uPlot did not load).";
    return null;
  }
  node.replaceChildren();
  const axis = cssVar("--chart-axis") || "#888";
  const grid = cssVar("--chart-grid") || "rgba(128,128,128,.2)";
  const font = `12px ${cssVar("--font-sans") || "system-ui, sans-serif"}`;
  const axisBase = { stroke: axis, font, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1, size: 4 } };
  const opts = {
    ...chartSize(node),
    scales: { x: { time: false, range: xRange }, y: { range: spec.range } },
    axes: [
      { ...axisBase, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800], values: (u, vals) => vals.map((v) => `${v}s`) },
      { ...axisBase, values: spec.yValues, size: 64, ...(spec.yIncrs ? { incrs: spec.yIncrs } : {}) },
    ],
    series: [{ label: "Time", value: (u, v) => (v == null ? "–" : `${v}s`) }, ...spec.series()],
    legend: { live: true },
    cursor: { drag: { x: false, y: false }, points: { size: 6 } },
  };
  return new window.uPlot(opts, chartData(spec, sortedRows()), node);
}

function buildCharts() {
  for (const key of Object.keys(CHARTS)) {
    if (state.charts[key]) state.charts[key].destroy();
    state.charts[key] = makeChart(key);
  }
}

function redraw() {
  const rows = sortedRows();
  for (const [key, spec] of Object.entries(CHARTS)) {
    const chart = state.charts[key];
    if (chart) chart.setData(chartData(spec, rows));
  }
  document.body.dataset.points = String(rows.length);
}

function watchChartSizes() {
  if (typeof ResizeObserver !== "function") return;
  const observer = new ResizeObserver(() => {
    for (const [key, spec] of Object.entries(CHARTS)) {
      const chart = state.charts[key];
      if (!chart) continue;
      const size = chartSize($(spec.el));
      if (size.width !== chart.width || size.height !== chart.height) chart.setSize(size);
    }
  });
  for (const spec of Object.values(CHARTS)) observer.observe($(spec.el));
}

// ------------------------------------------------------------------ overview

function showError(message) {
  const box = $("page-error");
  box.textContent = message || "";
  box.hidden = !message;
}

function setProgress(fraction) {
  const f = Math.max(0, Math.min(1, Number.isFinite(fraction) ? fraction : 0));
  $("progress-bar").style.width = `${(f * 100).toFixed(1)}%`;
  $("progress").setAttribute("aria-valuenow", String(Math.round(f * 100)));
}

function applyStatus(s) {
  state.status = { ...(state.status || {}), ...s };
  const st = state.status;
  setBadge($("status"), st.status, st.result, st.result_reason);
  document.body.dataset.status = st.status || "";
  document.body.dataset.result = st.result || "";
  renderThresholds(st.thresholds || [], st.abort_on_error_rate, st.stopped_by_circuit);
  const verdict = $("result-reason");
  if (verdict) {
    verdict.textContent = st.result === "failed" && st.result_reason ? `Failed: ${st.result_reason}` : "";
    verdict.hidden = !verdict.textContent;
  }
  const title = st.label ? st.label : (st.id ? `Run ${st.id}` : "Load test");
  $("run-title").textContent = title;
  document.title = `${title} · ${st.status || ""} · loadtester`;
  $("target-url").textContent = st.url || "–";
  $("users-value").textContent = fmtInt(st.users);
  $("duration-value").textContent = fmtSeconds(st.duration);
  $("started-at").textContent = fmtDate(st.started_at);
  $("elapsed").textContent = fmtSeconds(st.elapsed_s);
  const running = st.status === "running";
  $("remaining").textContent = running ? fmtSeconds(st.remaining_s) : "–";
  setProgress(st.status === "completed" ? 1 : st.progress);
  $("progress").dataset.status = st.status || "";
  $("progress").dataset.result = st.result || "";
  $("stop-button").hidden = !running;
  if (running && st.stopping) {
    $("stop-button").disabled = true;
    $("stop-label").textContent = "Stopping…";
  }
  $("report-links").hidden = running || !st.status;
}

function renderThresholds(thresholds, abortRate, stoppedByCircuit) {
  const line = $("thresholds-line");
  if (!line) return;
  const items = thresholds.map((t) => {
    const state = t.passed === true ? "pass" : t.passed === false ? "fail" : "pending";
    return el("span", { class: `threshold threshold-${state}`, dataset: { state } },
      `${t.expression} ${state === "pass" ? "✓" : state === "fail" ? "✗" : "…"}`);
  });
  if (typeof abortRate === "number") {
    items.push(el("span", { class: `threshold threshold-${stoppedByCircuit ? "fail" : "pending"}` },
      `stop at ${fmtPct(abortRate)} errors${stoppedByCircuit ? ": tripped" : ""}`));
  } else if (stoppedByCircuit) {
    items.push(el("span", { class: "threshold threshold-fail" }, "stopped by the circuit breaker"));
  }
  line.replaceChildren(...(items.length ? [el("span", { class: "muted small" }, "Thresholds "), ...items] : []));
  line.hidden = !items.length;
}

function showReportLinks() {
  const id = encodeURIComponent(uuid);
  $("report-html").href = withToken(`/report/${id}`);
  $("report-pdf").href = withToken(`/api/report/${id}`);
  $("report-pdf").setAttribute("download", `loadtest-${uuid}.pdf`);
  $("report-links").hidden = false;
}

// ------------------------------------------------------------------ numbers

function renderNumbers(m) {
  const lat = m.latency_ms || {};
  $("stat-requests").textContent = fmtInt(m.requests);
  $("stat-rps").textContent = fmtRps(m.rps);
  $("stat-avg").textContent = fmtMs(lat.avg);
  $("stat-p99").textContent = fmtMs(lat.p99);
  const attempts = (m.requests || 0) + (m.errors || 0);
  const rate = typeof m.success_rate === "number" && attempts > 0 ? m.success_rate : null;
  $("stat-success").textContent = fmtPct(rate);
  $("stat-errors").textContent = fmtInt(m.errors);
  $("stat-success").className = `stat-value ${rate === null ? "" : rate >= 0.99 ? "good" : rate >= 0.9 ? "warn" : "bad"}`;
  renderStatusCodes(m.status_codes || {});
  renderErrorKinds(m.errors_by_kind || {});
  renderLatencyTable(lat, m.bytes);
}

function renderNumbersFromWindows() {
  const rows = sortedRows();
  if (!rows.length) return;
  const requests = rows.reduce((n, r) => n + (r.rps || 0), 0);
  const errors = rows.reduce((n, r) => n + (r.errors || 0), 0);
  const last = rows[rows.length - 1];
  $("stat-requests").textContent = fmtInt(requests);
  $("stat-rps").textContent = fmtRps(last.rps);
  $("stat-avg").textContent = fmtMs(last.p50_ms);
  $("stat-p99").textContent = fmtMs(last.p99_ms);
  $("stat-success").textContent = fmtPct(last.success_rate);
  $("stat-errors").textContent = fmtInt(errors);
  const note = $("numbers-note");
  note.textContent = "Live: throughput, latency and success rate of the last second (p50 shown as the average); full figures when the run ends.";
  note.hidden = false;
}

function renderStatusCodes(codes) {
  const body = $("status-codes").tBodies[0];
  const entries = Object.entries(codes).sort((a, b) => a[0].localeCompare(b[0]));
  const total = entries.reduce((n, [, c]) => n + c, 0);
  if (!entries.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "3" }, "No responses yet.")));
    return;
  }
  body.replaceChildren(...entries.map(([code, count]) => el("tr", { dataset: { code } },
    el("td", {}, el("span", { class: `code code-${String(code)[0]}xx` }, code)),
    el("td", { class: "num" }, fmtInt(count)),
    el("td", { class: "num" }, total ? fmtPct(count / total) : "–"))));
}

function renderErrorKinds(kinds) {
  const body = $("error-kinds").tBodies[0];
  const entries = Object.entries(kinds).filter(([, c]) => c > 0).sort((a, b) => b[1] - a[1]);
  if (!entries.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "2" }, "No errors.")));
    return;
  }
  body.replaceChildren(...entries.map(([kind, count]) => el("tr", {},
    el("td", {}, kind.replace(/_/g, " ")), el("td", { class: "num" }, fmtInt(count)))));
}

function renderLatencyTable(lat, bytes) {
  const body = $("latency-table").tBodies[0];
  const rows = [["min", "Min"], ["p50", "p50"], ["p75", "p75"], ["p90", "p90"], ["p99", "p99"],
                ["p999", "p99.9"], ["max", "Max"], ["stdev", "Std dev"]]
    .filter(([key]) => typeof lat[key] === "number");
  if (!rows.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "2" }, "No latency samples.")));
    return;
  }
  const trs = rows.map(([key, name]) => el("tr", {}, el("td", {}, name), el("td", { class: "num" }, fmtMs(lat[key]))));
  if (typeof bytes === "number") trs.push(el("tr", { class: "sep" }, el("td", {}, "Bytes read"), el("td", { class: "num" }, fmtBytes(bytes))));
  body.replaceChildren(...trs);
}

// ------------------------------------------------------------------ data flow

function mergeWindow(row) {
  if (!row || typeof row.second !== "number") return false;
  state.seconds.set(row.second, row);
  return true;
}

function stopTimers() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
}

function closeStream() {
  if (state.stream) {
    state.stream.close();
    state.stream = null;
  }
}

async function loadFinal(attempt = 0) {
  if (state.finished && attempt === 0) return;
  state.finished = true;
  closeStream();
  stopTimers();
  let status;
  try {
    status = await api(`/api/status/${encodeURIComponent(uuid)}`);
  } catch (err) {
    showError(`Cannot load the run: ${err.message}`);
    return;
  }
  if (status.status === "running" && attempt < 20) {       // the server is still writing it down
    applyStatus(status);
    setTimeout(() => loadFinal(attempt + 1), 500);
    return;
  }
  applyStatus(status);
  const [metrics, series] = await Promise.allSettled([
    api(`/api/metrics/${encodeURIComponent(uuid)}`),
    api(`/api/timeseries/${encodeURIComponent(uuid)}`),
  ]);
  if (series.status === "fulfilled") {
    const rows = series.value?.seconds || [];
    if (rows.length) {
      state.seconds.clear();
      rows.forEach(mergeWindow);
    }
  }
  redraw();
  if (metrics.status === "fulfilled" && metrics.value) {
    renderNumbers(metrics.value);
    $("numbers-note").hidden = true;
  } else {
    renderNumbersFromWindows();
  }
  showReportLinks();
  document.body.dataset.final = "1";
}

async function pollStatus() {
  try {
    const status = await api(`/api/status/${encodeURIComponent(uuid)}`);
    applyStatus(status);
    if (status.status !== "running") loadFinal();
  } catch (e) { /* transient; the stream or the next poll will tell */ }
}

async function pollMetrics() {
  if (!state.liveMetrics || state.finished) return;
  try {
    const m = await api(`/api/metrics/${encodeURIComponent(uuid)}`);
    if (state.finished) return;
    if (m && typeof m.requests === "number") {
      renderNumbers(m);
      $("numbers-note").hidden = true;
    }
  } catch (e) {
    state.liveMetrics = false;
    renderNumbersFromWindows();
  }
}

function openStream() {
  // the stream replays the run so far; skip the seconds /api/timeseries already gave
  const since = state.seconds.size ? Math.max(...state.seconds.keys()) : 0;
  const source = new EventSource(withToken(`/api/stream/${encodeURIComponent(uuid)}${since ? `?since=${since}` : ""}`));
  state.stream = source;
  source.addEventListener("window", (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    if (mergeWindow(data)) redraw();
    const update = {};
    for (const key of ["elapsed_s", "remaining_s", "progress"]) {
      if (typeof data[key] === "number") update[key] = data[key];
    }
    if (data.status) update.status = data.status;
    if (Object.keys(update).length) applyStatus(update);
    if (!state.liveMetrics) renderNumbersFromWindows();
  });
  source.addEventListener("done", () => {
    source.close();
    loadFinal();
  });
  source.onerror = () => {
    // EventSource reconnects by itself; when the server ended the stream for good, ask once.
    if (source.readyState === EventSource.CLOSED) pollStatus();
  };
}

async function stopRun() {
  const button = $("stop-button");
  button.disabled = true;
  $("stop-label").textContent = "Stopping…";
  try {
    await api(`/api/stop/${encodeURIComponent(uuid)}`, { method: "POST" });
    setTimeout(pollStatus, 300);
  } catch (err) {
    showError(`Cannot stop: ${err.message}`);
    button.disabled = false;
    $("stop-label").textContent = "Stop";
  }
}

async function init() {
  initTheme();
  $("run-uuid").textContent = uuid;
  buildCharts();
  watchChartSizes();
  onThemeChange(() => buildCharts());
  $("stop-button").addEventListener("click", stopRun);

  let status;
  try {
    status = await api(`/api/status/${encodeURIComponent(uuid)}`);
  } catch (err) {
    setBadge($("status"), "unknown");
    showError(err.status === 404 ? `No run with id ${uuid}.` : `Cannot load the run: ${err.message}`);
    return;
  }
  applyStatus(status);
  if (status.status !== "running") {
    await loadFinal();
    return;
  }
  // seconds recorded before this page opened, then the live stream
  try {
    const series = await api(`/api/timeseries/${encodeURIComponent(uuid)}`);
    (series?.seconds || []).forEach(mergeWindow);
    redraw();
  } catch (e) { /* the stream fills in */ }
  openStream();
  state.timers.push(setInterval(pollStatus, STATUS_POLL_MS));
  state.timers.push(setInterval(pollMetrics, METRICS_POLL_MS));
  pollMetrics();
}

init();
