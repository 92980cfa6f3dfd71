// `/compare?a=UUID&b=UUID`: run B against run A (the baseline), from /api/compare (the
// numbers, the plain summary, the settings side by side) with both runs' series overlaid.
// The address holds both runs, so the page survives a reload and can be shared.
import { api, el, fmtInt, fmtMs, fmtPct, fmtRps, initTheme, onThemeChange } from "/static/app.js";
import { Chart, DISTRIBUTION_AXIS, distributionPoints, watchSizes, withAlpha } from "/static/charts.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const A = params.get("a") || "";
const B = params.get("b") || "";
const COLOR_A = "#64748b";
const COLOR_B = "#3b82f6";
const charts = {};

const ROWS = [
  ["rps", "Throughput (req/s)", fmtRps, "up"],
  ["p50", "Latency p50", fmtMs, "down"],
  ["p95", "Latency p95", fmtMs, "down"],
  ["p99", "Latency p99", fmtMs, "down"],
  ["avg", "Latency avg", fmtMs, "down"],
  ["error_rate", "Error rate", fmtPct, "down"],
  ["requests", "Requests", fmtInt, null],
  ["errors", "Errors", fmtInt, "down"],
];

function showError(message) {
  $("page-error").textContent = message;
  $("page-error").hidden = false;
}

function change(a, b) {
  return typeof a === "number" && typeof b === "number" && a !== 0 ? (b - a) / a : null;
}

function changeCell(key, a, b, better) {
  let text = "–";
  let delta = null;
  if (key === "error_rate" && typeof a === "number" && typeof b === "number") {
    delta = b - a;
    text = `${delta >= 0 ? "+" : ""}${(delta * 100).toFixed(2)} pp`;
  } else {
    delta = change(a, b);
    if (delta !== null) text = `${delta > 0 ? "+" : ""}${(delta * 100).toFixed(1)}%`;
  }
  let tone = "";
  if (better && delta !== null && Math.abs(delta) >= (key === "error_rate" ? 0.01 : 0.05)) {
    tone = (better === "up" ? delta > 0 : delta < 0) ? "good" : "bad";
  }
  return el("td", { class: `num change ${tone}` }, text);
}

function runName(run, letter) {
  return `${letter}: ${run.label || `run ${run.run_id ?? ""}`}`;
}

function fmtSetting(key, value) {
  if (key === "traffic") return fmtTraffic(value);
  if (key === "body" && !value) return "none";
  if (value === null || value === undefined || value === "") return "–";
  if (key === "mode") return value === "rate" ? "open loop (rate)" : "closed loop";
  if (key === "insecure") return value ? "yes" : "no";
  if (typeof value === "number") return key.endsWith("_s") ? `${+value.toFixed(1)}` : fmtInt(value);
  return String(value);
}

/** The traffic a run sent (api.traffic_settings): the CLI's few words, then what they leave
 *  out that can tell two runs apart (the data's seed, each weight's target, each step). */
function fmtTraffic(traffic) {
  if (!traffic) return "fixed requests";
  const seed = traffic.data && traffic.data.seed !== null && traffic.data.seed !== undefined
    ? `data seed ${traffic.data.seed}` : null;
  const details = [
    ...(seed ? [seed] : []),
    ...(traffic.weights || []).map((w) => `${w.weight} × ${w.target}`),
    ...(traffic.journey || []).map((step, i) => `step ${i + 1}: ${step}`),
  ];
  const shown = details.slice(0, 12);
  if (details.length > shown.length) shown.push(`… and ${details.length - shown.length} more`);
  return el("span", { class: "traffic-setting" }, el("span", {}, traffic.summary),
    ...shown.map((line) => el("span", { class: "traffic-detail" }, line)));
}

function renderSummary(result) {
  const ra = result.a, rb = result.b;
  const link = (run, letter) => el("a", { href: `/test/${encodeURIComponent(run.uuid)}`, class: "run-link" }, runName(run, letter));
  $("compare-runs").replaceChildren(link(ra, "A"), el("span", { class: "muted" }, " (baseline) vs "), link(rb, "B"));
  document.title = `${runName(ra, "A")} vs ${runName(rb, "B")} · loadtester`;
  const summary = result.summary || {};
  const verdict = $("compare-verdict");
  verdict.textContent = summary.text || result.verdict || "";
  verdict.className = `verdict verdict-${String(summary.tone || "").replace(/[^a-z]+/gi, "-").toLowerCase()}`;
  verdict.dataset.tone = summary.tone || "";
  const warning = $("compare-warning");
  const failed = [ra, rb].filter((r) => r.result === "failed");
  const warnings = [];
  if (summary.tone === "different targets") warnings.push(`A hit ${ra.url}, B hit ${rb.url}.`);
  for (const run of failed) warnings.push(`${run === ra ? "A" : "B"} failed${run.result_reason ? `: ${run.result_reason}` : ""}.`);
  warning.textContent = warnings.join(" ");
  warning.hidden = !warnings.length;
  $("compare-summary").hidden = false;

  const rows = ROWS.map(([key, name, fmt, better]) => el("tr", { dataset: { metric: key } },
    el("th", { scope: "row" }, name),
    el("td", { class: "num" }, fmt(ra[key])),
    el("td", { class: "num" }, fmt(rb[key])),
    changeCell(key, ra[key], rb[key], better)));
  $("compare-table").tBodies[0].replaceChildren(...rows);
  $("compare-table").hidden = false;

  $("stat-verdict").textContent = result.verdict || "";
  $("compare-explanation").textContent = result.explanation || "";
  $("compare-notes").replaceChildren(...(result.notes || []).map((n) => el("li", {}, n)));
  $("compare-stats").hidden = false;

  const settings = (result.settings || []).map((s) => el("tr", { class: s.differs ? "differs" : "", dataset: { setting: s.key } },
    el("th", { scope: "row" }, s.name),
    el("td", {}, fmtSetting(s.key, s.a)),
    el("td", {}, fmtSetting(s.key, s.b))));
  $("settings-table").tBodies[0].replaceChildren(...settings);
  $("settings-section").hidden = false;
}

function overlay(rowsA, rowsB, pick) {
  const n = Math.max(rowsA.length ? rowsA[rowsA.length - 1].second : 0, rowsB.length ? rowsB[rowsB.length - 1].second : 0);
  const xs = Array.from({ length: n }, (_, i) => i + 1);
  const column = (rows) => {
    const by = new Map(rows.map((r) => [r.second, pick(r)]));
    return xs.map((x) => (by.has(x) ? by.get(x) : null));
  };
  return [xs, [column(rowsA), column(rowsB)]];
}

function buildCharts(seriesA, seriesB, distA, distB) {
  const two = (fmt, fill) => [
    { label: "A", color: COLOR_A, fmt, dash: [5, 4] },
    { label: "B", color: COLOR_B, fmt, ...(fill ? { fill: withAlpha(COLOR_B, 0.1) } : {}) },
  ];
  charts.rps = new Chart($("cmp-rps-chart"), { series: two(fmtRps, true), group: "compare", empty: "no responses" });
  charts.latency = new Chart($("cmp-latency-chart"), {
    series: two(fmtMs), group: "compare", empty: "no responses",
    yValues: (u, vals) => vals.map((v) => `${+v.toFixed(2)} ms`) });
  charts.distribution = new Chart($("cmp-distribution-chart"), {
    ...DISTRIBUTION_AXIS, series: two(fmtMs), empty: "no responses",
    yValues: (u, vals) => vals.map((v) => `${+v.toFixed(2)} ms`) });
  const draw = () => {
    const [xs, rps] = overlay(seriesA, seriesB, (r) => r.rps ?? null);
    charts.rps.setData(xs, rps);
    const [xl, p99] = overlay(seriesA, seriesB, (r) => r.p99_ms ?? null);
    charts.latency.setData(xl, p99);
    const pa = distributionPoints(distA), pb = distributionPoints(distB);
    const xd = pa[0].length >= pb[0].length ? pa[0] : pb[0];
    charts.distribution.setData(xd, [pa[1].length ? pa[1] : xd.map(() => null), pb[1].length ? pb[1] : xd.map(() => null)]);
  };
  draw();
  $("compare-charts").hidden = false;
  for (const chart of Object.values(charts)) chart.resize();
  watchSizes(() => Object.values(charts));
  onThemeChange(() => { for (const chart of Object.values(charts)) chart.build(); draw(); });
}

async function init() {
  initTheme();
  if (!A || !B) {
    showError("Give two runs: /compare?a=UUID&b=UUID (tick two runs in the history and press Compare).");
    return;
  }
  let result;
  try {
    result = await api(`/api/compare?a=${encodeURIComponent(A)}&b=${encodeURIComponent(B)}`);
  } catch (err) {
    showError(err.status === 404 ? `Run not found: ${err.message}.` : `Cannot compare: ${err.message}`);
    return;
  }
  renderSummary(result);
  const get = (path) => api(path).catch(() => null);
  const [tsA, tsB, mA, mB] = await Promise.all([
    get(`/api/timeseries/${encodeURIComponent(A)}`), get(`/api/timeseries/${encodeURIComponent(B)}`),
    get(`/api/metrics/${encodeURIComponent(A)}`), get(`/api/metrics/${encodeURIComponent(B)}`),
  ]);
  buildCharts(tsA?.seconds || [], tsB?.seconds || [], mA?.latency_distribution || [], mB?.latency_distribution || []);
  document.body.dataset.ready = "1";
}

init();
