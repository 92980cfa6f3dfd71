// `/test/{uuid}`: live overview and charts from the SSE stream while the run goes on;
// a finished run is drawn from /api/timeseries and /api/metrics.
//
// The headline cards of a running test come from the same per-second rows the charts draw
// (throughput, errors/s and p95 of the last closed second; totals summed over those rows), so
// the cards and the charts agree; a finished run's cards are its stored totals.
import {
  api, el, withToken, fmtBytes, fmtDate, fmtInt, fmtMs, fmtPct, fmtRate, fmtRps, fmtSeconds, initTheme, onThemeChange,
  setBadge,
} from "/static/app.js";
import { Chart, DISTRIBUTION_AXIS, distributionPoints, watchSizes, withAlpha } from "/static/charts.js";

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
  charts: {},
};

// ------------------------------------------------------------------ charts

const COLORS = {
  rps: "#3b82f6", errors: "#ef4444", p50: "#10b981", p95: "#f59e0b", p99: "#ef4444",
  success: "#8b5cf6", connections: "#0ea5e9",
  c2xx: "#10b981", c3xx: "#3b82f6", c4xx: "#f59e0b", c5xx: "#ef4444", transport: "#6b7280",
};

const fmtCount = (v) => fmtInt(v);
const COUNT_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000];
const fmtPercent = (v) => `${v.toFixed(1)}%`;

function runningSpan() {
  const st = state.status || {};
  return st.status === "running" && typeof st.duration === "number" ? [1, st.duration] : null;
}

function codeClassColumn(rows, cls) {
  return rows.map((r) => {
    if (!r.status_codes) return null;
    let n = 0;
    for (const [code, count] of Object.entries(r.status_codes)) if (String(code)[0] === cls) n += count;
    return n;
  });
}

function transportErrors(row) {
  if (!row.error_kinds) return null;
  let n = 0;
  for (const [kind, count] of Object.entries(row.error_kinds)) if (kind !== "status") n += count;
  return n;
}

const TIME_CHARTS = {
  rps: {
    el: "rps-chart", empty: "no responses",
    series: [
      { label: "Responses/s", color: COLORS.rps, fill: withAlpha(COLORS.rps, 0.14), fmt: fmtRps },
      { label: "Errors/s", color: COLORS.errors, width: 1.5, fmt: fmtCount },
    ],
    yValues: (u, vals) => vals.map((v) => (v >= 1000 ? `${(v / 1000).toFixed(1)}k` : String(v))),
    columns: (rows) => [rows.map((r) => r.rps ?? null), rows.map((r) => r.errors ?? null)],
  },
  latency: {
    el: "latency-chart", empty: "no responses",
    series: [
      { label: "p50", color: COLORS.p50, fmt: fmtMs },
      { label: "p95", color: COLORS.p95, fmt: fmtMs },
      { label: "p99", color: COLORS.p99, fmt: fmtMs },
    ],
    yValues: (u, vals) => vals.map((v) => `${+v.toFixed(2)} ms`),
    columns: (rows) => [rows.map((r) => r.p50_ms ?? null), rows.map((r) => r.p95_ms ?? null),
                        rows.map((r) => r.p99_ms ?? null)],
  },
  connections: {
    el: "connections-chart", empty: "no connection data",
    series: [{ label: "In flight", color: COLORS.connections, fill: withAlpha(COLORS.connections, 0.12), fmt: fmtCount }],
    yIncrs: COUNT_INCRS,
    columns: (rows) => [rows.map((r) => r.in_flight ?? null)],
  },
  codes: {
    el: "codes-chart", empty: "no responses",
    series: [
      { label: "2xx", color: COLORS.c2xx, fmt: fmtCount },
      { label: "3xx", color: COLORS.c3xx, fmt: fmtCount },
      { label: "4xx", color: COLORS.c4xx, fmt: fmtCount },
      { label: "5xx", color: COLORS.c5xx, fmt: fmtCount },
      { label: "Transport errors", color: COLORS.transport, dash: [4, 3], fmt: fmtCount },
    ],
    yIncrs: COUNT_INCRS,
    columns: (rows) => [codeClassColumn(rows, "2"), codeClassColumn(rows, "3"), codeClassColumn(rows, "4"),
                        codeClassColumn(rows, "5"), rows.map(transportErrors)],
  },
  success: {
    el: "success-chart", empty: "no responses",
    series: [{ label: "Success", color: COLORS.success, fill: withAlpha(COLORS.success, 0.12), fmt: fmtPercent }],
    yValues: (u, vals) => vals.map((v) => `${v}%`),
    columns: (rows) => [rows.map((r) => (typeof r.success_rate === "number" ? r.success_rate * 100 : null))],
    // 100% sits just below the top edge, not on it
    yRange: (u, min, max) => [Math.max(0, Math.min(90, Math.floor((min ?? 100) / 10) * 10)), 100.8],
    yIncrs: [1, 2, 5, 10, 20, 25, 50],
  },
};

const DISTRIBUTION = {
  el: "distribution-chart", empty: "no responses", ...DISTRIBUTION_AXIS,
  series: [{ label: "Latency", color: COLORS.p95, fill: withAlpha(COLORS.p95, 0.12), fmt: fmtMs }],
  yValues: (u, vals) => vals.map((v) => `${+v.toFixed(2)} ms`),
};

let distribution = [[], []];

function sortedRows() {
  return [...state.seconds.values()].sort((a, b) => a.second - b.second);
}

function buildCharts() {
  for (const [key, spec] of Object.entries(TIME_CHARTS)) {
    state.charts[key] = new Chart($(spec.el), { ...spec, group: "run", xSpan: runningSpan });
  }
  state.charts.distribution = new Chart($(DISTRIBUTION.el), DISTRIBUTION);
  redraw();
}

function rebuildCharts() {
  for (const chart of Object.values(state.charts)) chart.build();
  redraw();
}

function redraw() {
  const rows = sortedRows();
  const xs = rows.map((r) => r.second);
  for (const [key, spec] of Object.entries(TIME_CHARTS)) {
    const chart = state.charts[key];
    if (!chart) continue;
    if (!rows.length && state.status?.status === "running") chart.setEmptyText("waiting for the first second…");
    else chart.setEmptyText(spec.empty);
    chart.setData(xs, spec.columns(rows));
  }
  state.charts.distribution?.setData(distribution[0], [distribution[1]]);
  document.body.dataset.points = String(rows.length);
  const last = rows[rows.length - 1];
  document.body.dataset.lastRps = last && typeof last.rps === "number" ? String(last.rps) : "";
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

const STOP_REASONS = {
  duration: "ran its duration", requests: "sent its request count", signal: "stopped (signal)",
  stopped: "stopped before its end", interrupted: "stopped before its end",
  aborted: "circuit breaker (error rate)",
};

function renderSettings(st) {
  const s = st.settings || {};
  const mode = s.mode === "rate" ? `open loop, ${fmtRate(s.rate)} req/s` : "closed loop (back to back)";
  $("set-mode").textContent = s.pipeline > 1 ? `${mode}, pipeline ${s.pipeline}` : mode;
  $("set-connections").textContent = fmtInt(s.connections);
  $("set-ramp").textContent = s.ramp_up_s ? fmtSeconds(s.ramp_up_s) : "none";
  $("set-method").textContent = s.method || "–";
  const planned = typeof s.planned_duration_s === "number" ? fmtSeconds(s.planned_duration_s)
    : (s.requests_limit ? `${fmtInt(s.requests_limit)} requests` : "–");
  const actual = typeof s.actual_duration_s === "number" ? `${s.actual_duration_s.toFixed(1)}s` : "–";
  $("set-duration").textContent = `${planned} / ${st.status === "running" ? `${actual} so far` : actual}`;
  $("set-stop").textContent = st.status === "running" ? "still running"
    : (STOP_REASONS[s.stop_reason] || s.stop_reason || st.status || "–");
  $("set-ended").textContent = st.status === "running" ? "–" : fmtDate(s.completed_at || st.completed_at);
  $("set-timeout").textContent = typeof s.timeout_s === "number" ? fmtSeconds(s.timeout_s) : "–";
  // a run keeps no body (it may hold a password): its size and sha256 tell runs apart
  $("set-body-row").hidden = !s.body;
  $("set-body").textContent = s.body || "–";
  // certificates: said for an https run (a run with --insecure says "skipped" whatever its URL)
  $("set-tls-row").hidden = !(s.insecure || /^https:/i.test(st.url || ""));
  $("set-tls").textContent = s.insecure ? "skipped" : "verified";
  renderTraffic(s.traffic || {});
}

// Lists of a run's targets (weights, steps, the targets table) show this many rows: a
// targets file may hold thousands; `loadtester show RUN` lists them all.
const TOP_ROWS = 20;

function moreLine(hidden, run) {
  return `… and ${fmtInt(hidden)} more (all of them: loadtester show ${run ?? "RUN"})`;
}

/** What shaped the requests (issue 15): data file, think time, weights, journey steps. */
function renderTraffic(traffic) {
  const shown = (id, on) => { $(`${id}-row`).hidden = !on; return on; };
  const run = state.status?.id;
  const capped = (items, item) => items.slice(0, TOP_ROWS).map(item).concat(items.length > TOP_ROWS
    ? [el("li", { class: "muted more" }, moreLine(items.length - TOP_ROWS, run))] : []);
  const data = traffic.data;
  if (shown("set-data", !!data)) {
    const seed = data.seed !== null && data.seed !== undefined ? `, seed ${data.seed}` : "";
    $("set-data").replaceChildren(
      el("span", { class: "data-file" }, data.file), ` · ${fmtInt(data.rows)} rows · sha256 `,
      el("abbr", { class: "sha", title: data.sha256 }, `${String(data.sha256).slice(0, 12)}…`),
      ` · ${data.order}${seed}`, data.per_connection ? " · one row per connection" : "");
  }
  const think = traffic.think_ms;
  if (shown("set-think", Array.isArray(think))) {
    $("set-think").textContent = think[0] === think[1] ? `${fmtMs(think[0])} between steps`
      : `${fmtMs(think[0])} to ${fmtMs(think[1])}, uniform`;
  }
  const weights = traffic.weights;
  if (shown("set-weights", Array.isArray(weights))) {
    const total = weights.reduce((n, w) => n + w.weight, 0);
    $("set-weights").replaceChildren(...capped(weights, (w) => el("li", {},
      el("span", { class: "weight" }, `${fmtInt(w.weight)} (${fmtPct(total ? w.weight / total : null)})`),
      " ", el("span", { class: "traffic-request" }, w.target))));
  }
  if (shown("set-journey", Array.isArray(traffic.journey))) {
    $("set-journey").replaceChildren(...capped(traffic.journey, (step) => el("li", { class: "traffic-request" }, step)));
  }
}

/** Per target (or journey step) counts and latency, for a run of more than one target; the
 *  first TOP_ROWS in their order, or, past that, the TOP_ROWS most sent. */
function renderTargets(m) {
  const targets = Array.isArray(m.targets) ? m.targets.map((t, i) => ({ ...t, index: i + 1 })) : [];
  $("targets-card").hidden = targets.length < 2;
  renderVariantsNote(m.variants);
  if (targets.length < 2) return;
  const journey = Array.isArray(m.traffic?.journey);
  const weighted = targets.some((t) => typeof t.weight === "number");
  $("targets-title").textContent = journey ? "Journey steps" : "Targets";
  const head = [["#", "num"], [journey ? "Step" : "Target", ""], ...(weighted ? [["Weight", "num"]] : []),
    ["Requests", "num"], ["Share", "num"], ["Errors", "num"], ["p50", "num"], ["p99", "num"]];
  $("targets-table").tHead.replaceChildren(el("tr", {}, ...head.map(([name, cls]) => el("th", { scope: "col", class: cls }, name))));
  const top = targets.length > TOP_ROWS
    ? [...targets].sort((a, b) => b.requests - a.requests).slice(0, TOP_ROWS) : targets;
  const attempts = m.attempts || 0;
  $("targets-table").tBodies[0].replaceChildren(...top.map((t) => el("tr", { dataset: { target: t.index } },
    el("td", { class: "num" }, String(t.index)),
    el("td", { class: "target" }, `${t.method} ${t.url}`),
    weighted ? el("td", { class: "num" }, fmtInt(t.weight)) : null,
    el("td", { class: "num" }, fmtInt(t.requests)),
    el("td", { class: "num" }, attempts ? fmtPct(t.requests / attempts) : "–"),
    el("td", { class: "num" }, fmtInt(t.errors)),
    el("td", { class: "num" }, fmtMs(t.latency_ms?.p50)),
    el("td", { class: "num" }, fmtMs(t.latency_ms?.p99)))));
  const more = $("targets-more");
  more.textContent = targets.length > TOP_ROWS
    ? `The ${TOP_ROWS} most sent of ${fmtInt(targets.length)}: ${moreLine(targets.length - TOP_ROWS, m.run_id)}` : "";
  more.hidden = !more.textContent;
}

/** A --data run: how evenly its request variants were sent, and where the full list is. */
function renderVariantsNote(variants) {
  const note = $("variants-note");
  note.textContent = variants && variants.count ? `Each of the ${fmtInt(variants.count)} request variants was sent `
    + `${fmtInt(variants.min)} to ${fmtInt(variants.max)} times (${fmtInt(variants.unserved)} never); `
    + `per variant: loadtester export ${state.status?.id ?? "RUN"} --variants` : "";
  note.hidden = !note.textContent;
}

function applyStatus(s) {
  state.status = { ...(state.status || {}), ...s };
  const st = state.status;
  setBadge($("status"), st.status, st.result, st.result_reason);
  document.body.dataset.status = st.status || "";
  document.body.dataset.result = st.result || "";
  renderThresholds(st.thresholds || [], st.abort_on_error_rate, st.stopped_by_circuit);
  const verdict = $("result-reason");
  verdict.textContent = st.result === "failed" && st.result_reason ? `Failed: ${st.result_reason}` : "";
  verdict.hidden = !verdict.textContent;
  const title = st.label ? st.label : (st.id ? `Run ${st.id}` : "Load test");
  $("run-title").textContent = title;
  document.title = `${title} · ${st.result === "failed" ? "failed" : st.status || ""} · loadtester`;
  $("target-url").textContent = st.url || "–";
  $("users-value").textContent = fmtInt(st.users);
  const limit = st.settings && st.settings.requests_limit;
  $("duration-value").textContent = st.duration || !limit ? fmtSeconds(st.duration)
    : `${fmtInt(limit)} requests`;
  $("started-at").textContent = fmtDate(st.started_at);
  $("elapsed").textContent = fmtSeconds(st.elapsed_s);
  const running = st.status === "running";
  $("remaining").textContent = running ? fmtSeconds(st.remaining_s) : "–";
  $("remaining-fact").hidden = !running;
  setProgress(st.status === "completed" ? 1 : st.progress);
  $("progress").dataset.status = st.status || "";
  $("progress").dataset.result = st.result || "";
  $("stop-button").hidden = !running;
  if (running && st.stopping) {
    $("stop-button").disabled = true;
    $("stop-label").textContent = "Stopping…";
  }
  if (st.settings) renderSettings(st);
  renderActions(st);
}

function renderThresholds(thresholds, abortRate, stoppedByCircuit) {
  const line = $("thresholds-line");
  const items = thresholds.map((t) => {
    const verdict = t.passed === true ? "pass" : t.passed === false ? "fail" : "pending";
    return el("span", { class: `threshold threshold-${verdict}`, dataset: { state: verdict } },
      `${t.expression} ${verdict === "pass" ? "✓" : verdict === "fail" ? "✗" : "…"}`);
  });
  if (typeof abortRate === "number") {
    items.push(el("span", { class: `threshold threshold-${stoppedByCircuit ? "fail" : "pending"}`, id: "breaker" },
      `stop at ${fmtPct(abortRate)} errors${stoppedByCircuit ? ": tripped" : ""}`));
  } else if (stoppedByCircuit) {
    items.push(el("span", { class: "threshold threshold-fail", id: "breaker" }, "stopped by the circuit breaker"));
  }
  line.replaceChildren(...(items.length ? [el("span", { class: "muted small" }, "Thresholds "), ...items] : []));
  line.hidden = !items.length;
}

function renderActions(st) {
  const id = encodeURIComponent(uuid);
  const running = st.status === "running";
  $("run-actions").hidden = !st.status;
  $("run-again").href = `/?from=${id}#new-test`;
  const previous = $("compare-previous");
  previous.hidden = running || !st.previous_uuid;
  if (st.previous_uuid) previous.href = `/compare?a=${encodeURIComponent(st.previous_uuid)}&b=${id}`;
  for (const fmt of ["csv", "json", "ndjson", "hgrm"]) {
    const link = $(`export-${fmt}`);
    link.href = withToken(`/api/export/${id}?format=${fmt}`);
    link.setAttribute("download", `loadtest-${uuid.slice(0, 8)}.${fmt}`);
  }
  $("report-html").href = withToken(`/report/${id}`);
  $("report-pdf").href = withToken(`/api/report/${id}`);
  $("report-pdf").setAttribute("download", `loadtest-${uuid}.pdf`);
  $("report-links").hidden = running;
  $("delete-button").hidden = running;
}

// ------------------------------------------------------------------ numbers

function setStat(id, text, label) {
  $(`stat-${id}`).textContent = text;
  if (label && $(`stat-${id}-label`)) $(`stat-${id}-label`).textContent = label;
}

function successClass(rate) {
  return `stat-value ${rate === null ? "" : rate >= 0.99 ? "good" : rate >= 0.9 ? "warn" : "bad"}`;
}

/** A finished run: its stored totals. */
function renderNumbers(m) {
  const lat = m.latency_ms || {};
  const attempts = typeof m.attempts === "number" ? m.attempts : m.requests;
  const seconds = typeof m.duration_s === "number" && m.duration_s > 0 ? m.duration_s : null;
  setStat("requests", fmtInt(attempts));
  setStat("rps", fmtRps(m.rps), "Throughput");
  setStat("eps", seconds && typeof m.errors === "number" ? fmtRps(m.errors / seconds) : "–", "Errors/s");
  setStat("p50", fmtMs(lat.p50), "p50 latency");
  setStat("p95", fmtMs(lat.p95), "p95 latency");
  setStat("p99", fmtMs(lat.p99), "p99 latency");
  const rate = typeof m.success_rate === "number" && attempts > 0 ? m.success_rate : null;
  setStat("success", fmtPct(rate));
  $("stat-success").className = successClass(rate);
  setStat("errors", fmtInt(m.errors));
  $("numbers-note").hidden = true;
  renderTables(m);
}

/** A running test: the rows the charts draw (the last closed second, and sums over them). */
function renderLiveNumbers() {
  const rows = sortedRows();
  const last = rows[rows.length - 1] || {};
  let requests = 0, errors = 0, successes = 0;
  for (const r of rows) {
    requests += r.requests || 0;
    errors += r.errors || 0;
    successes += typeof r.success_rate === "number" ? Math.round(r.success_rate * (r.requests || 0)) : 0;
  }
  setStat("requests", fmtInt(rows.length ? requests : null));
  setStat("rps", fmtRps(last.rps), "Throughput · last second");
  setStat("eps", fmtInt(last.errors), "Errors/s · last second");
  setStat("p50", fmtMs(last.p50_ms), "p50 · last second");
  setStat("p95", fmtMs(last.p95_ms), "p95 · last second");
  setStat("p99", fmtMs(last.p99_ms), "p99 · last second");
  const rate = requests ? successes / requests : null;
  setStat("success", fmtPct(rate));
  $("stat-success").className = successClass(rate);
  setStat("errors", fmtInt(rows.length ? errors : null));
  const note = $("numbers-note");
  note.textContent = rows.length
    ? `Live, from the ${rows.length} complete second${rows.length === 1 ? "" : "s"} in the charts; the run's full figures when it ends.`
    : "Live figures appear after the first complete second.";
  note.hidden = false;
}

function renderTables(m) {
  renderStatusCodes(m.status_codes || {});
  renderErrorKinds(m.errors_by_kind || {}, m.error_messages || {});
  renderLatencyTable(m.latency_ms || {}, m.bytes);
  renderTargets(m);
  if (Array.isArray(m.latency_distribution)) {
    distribution = distributionPoints(m.latency_distribution);
    state.charts.distribution?.setData(distribution[0], [distribution[1]]);
  }
}

function renderStatusCodes(codes) {
  const body = $("status-codes").tBodies[0];
  const entries = Object.entries(codes).sort((a, b) => a[0].localeCompare(b[0]));
  const total = entries.reduce((n, [, c]) => n + c, 0);
  if (!entries.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "3" }, "No responses.")));
    return;
  }
  body.replaceChildren(...entries.map(([code, count]) => el("tr", { dataset: { code } },
    el("td", {}, el("span", { class: `code code-${String(code)[0]}xx` }, code)),
    el("td", { class: "num" }, fmtInt(count)),
    el("td", { class: "num" }, total ? fmtPct(count / total) : "–"))));
}

function renderErrorKinds(kinds, messages) {
  const body = $("error-kinds").tBodies[0];
  const entries = Object.entries(kinds).filter(([, c]) => c > 0).sort((a, b) => b[1] - a[1]);
  if (!entries.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "2" }, "No errors.")));
    return;
  }
  body.replaceChildren(...entries.map(([kind, count]) => el("tr", { dataset: { kind } },
    el("td", {}, kind.replace(/_/g, " "),
      messages[kind] ? el("span", { class: "error-message" }, `first: ${messages[kind]}`) : null),
    el("td", { class: "num" }, fmtInt(count)))));
}

function renderLatencyTable(lat, bytes) {
  const body = $("latency-table").tBodies[0];
  const rows = [["min", "Min"], ["p50", "p50"], ["p75", "p75"], ["p90", "p90"], ["p95", "p95"], ["p99", "p99"],
                ["p999", "p99.9"], ["max", "Max"], ["stdev", "Std dev"]]
    .filter(([key]) => typeof lat[key] === "number");
  if (!rows.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "2" }, "No responses.")));
    return;
  }
  const trs = rows.map(([key, name]) => el("tr", { dataset: { percentile: key } }, el("td", {}, name),
    el("td", { class: "num" }, fmtMs(lat[key]))));
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
  if (metrics.status === "fulfilled" && metrics.value) renderNumbers(metrics.value);
  else renderLiveNumbers();
  redraw();
  document.body.dataset.final = "1";
}

async function pollStatus() {
  try {
    const status = await api(`/api/status/${encodeURIComponent(uuid)}`);
    applyStatus(status);
    if (status.status !== "running") loadFinal();
  } catch (e) { /* transient; the stream or the next poll will tell */ }
}

// while running, /api/metrics gives the tables (status codes, errors and their messages)
async function pollTables() {
  if (state.finished) return;
  try {
    const m = await api(`/api/metrics/${encodeURIComponent(uuid)}`);
    if (!state.finished && m) renderTables(m);
  } catch (e) { /* the next poll */ }
}

function openStream() {
  // the stream replays the run so far; skip the seconds /api/timeseries already gave
  const since = state.seconds.size ? Math.max(...state.seconds.keys()) : 0;
  const source = new EventSource(withToken(`/api/stream/${encodeURIComponent(uuid)}${since ? `?since=${since}` : ""}`));
  state.stream = source;
  source.addEventListener("window", (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    if (state.finished) return;
    if (mergeWindow(data)) {
      redraw();
      renderLiveNumbers();
    }
    const update = {};
    for (const key of ["elapsed_s", "remaining_s", "progress"]) {
      if (typeof data[key] === "number") update[key] = data[key];
    }
    if (data.status) update.status = data.status;
    if (Object.keys(update).length) applyStatus(update);
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

// ------------------------------------------------------------------ actions

async function copyLink() {
  const note = $("action-note");
  const link = window.location.href.split("#")[0];
  let copied = false;
  try {
    await navigator.clipboard.writeText(link);
    copied = true;
  } catch (e) {
    // no clipboard permission: the old way, from a selected text field
    const field = el("textarea", { class: "sr-only", readonly: true });
    field.value = link;
    document.body.append(field);
    field.select();
    try { copied = document.execCommand("copy"); } catch (err) { copied = false; }
    field.remove();
  }
  note.textContent = copied ? "Link copied." : `Copy this link: ${link}`;
  note.dataset.copied = copied ? "1" : "0";
}

function askDelete() {
  const dialog = $("delete-dialog");
  if (typeof dialog.showModal === "function") dialog.showModal();
  else if (window.confirm("Delete this run? This cannot be undone.")) deleteRun();
}

async function deleteRun() {
  try {
    await api(`/api/runs/${encodeURIComponent(uuid)}`, { method: "DELETE" });
  } catch (err) {
    showError(`Cannot delete: ${err.message}`);
    return;
  }
  window.location.assign("/?deleted=1#history-section");
}

async function init() {
  initTheme();
  $("run-uuid").textContent = uuid;
  buildCharts();
  watchSizes(() => Object.values(state.charts));
  onThemeChange(() => rebuildCharts());
  $("stop-button").addEventListener("click", stopRun);
  $("copy-link").addEventListener("click", copyLink);
  $("delete-button").addEventListener("click", askDelete);
  $("delete-dialog").addEventListener("close", () => {
    if ($("delete-dialog").returnValue === "delete") deleteRun();
  });

  let status;
  try {
    status = await api(`/api/status/${encodeURIComponent(uuid)}`);
  } catch (err) {
    setBadge($("status"), "unknown");
    showError(err.status === 404 ? `Run not found: no run with id ${uuid}.` : `Cannot load the run: ${err.message}`);
    return;
  }
  applyStatus(status);
  if (status.status !== "running") {
    await loadFinal();
    return;
  }
  // the stream replays the closed seconds recorded before this page opened, then goes on live
  // (not /api/timeseries: its newest second may still be open, and the stream would skip it)
  redraw();
  renderLiveNumbers();
  openStream();
  state.timers.push(setInterval(pollStatus, STATUS_POLL_MS));
  state.timers.push(setInterval(pollTables, METRICS_POLL_MS));
  pollTables();
}

init();
