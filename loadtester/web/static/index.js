// `/`: start form (validated here, server errors shown inline), running tests, history, compare.
import {
  api, ApiError, el, fmtDate, fmtInt, fmtMs, fmtPct, fmtRate, fmtRps, fmtSeconds, hostOf, initTheme,
  listFrom, reportLinks, statusBadge,
} from "/static/app.js";

const PER_PAGE = 10;
const RUNNING_POLL_MS = 2000;
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*:\s*(.*)$/;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ form

function setFieldError(id, message) {
  const input = $(id);
  const slot = $(`${id}-error`);
  if (slot) slot.textContent = message || "";
  if (input) {
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
  return !message;
}

function showFormError(message) {
  const box = $("form-error");
  box.textContent = message || "";
  box.hidden = !message;
}

function intValue(id) {
  const raw = $(id).value.trim();
  if (raw === "") return NaN;
  return Number(raw);
}

export function parseHeaders(text) {
  const headers = {};
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i].trim();
    if (!line) continue;
    const match = HEADER_LINE.exec(line);
    if (!match) throw new Error(`Line ${i + 1} is not "Name: value".`);
    headers[match[1]] = match[2];
  }
  return headers;
}

/** Whether the URL field holds an https:// URL (the TLS checkbox means something only then). */
function isHttps() {
  return /^https:\/\//i.test($("url").value.trim());
}

/** The TLS checkbox is shown for https:// URLs only (it keeps its state while hidden). */
function syncInsecureField() {
  $("insecure-field").hidden = !isHttps();
}

function validate() {
  const errors = {};
  const url = $("url").value.trim();
  if (!url) errors.url = "Enter the URL to test.";
  else {
    let parsed = null;
    try { parsed = new URL(url); } catch (e) { parsed = null; }
    if (!parsed || !/^https?:$/.test(parsed.protocol) || !parsed.hostname) {
      errors.url = "Enter a full http:// or https:// URL.";
    }
  }
  const users = intValue("users");
  if (!Number.isInteger(users) || users < 1 || users > 1000) errors.users = "Between 1 and 1000 users.";
  const duration = intValue("duration");
  if (!Number.isInteger(duration) || duration < 1 || duration > 3600) errors.duration = "Between 1 and 3600 seconds.";
  const rampRaw = $("ramp_up").value.trim();
  const rampUp = rampRaw === "" ? 0 : Number(rampRaw);
  if (!Number.isFinite(rampUp) || rampUp < 0) errors.ramp_up = "Ramp-up cannot be negative.";
  else if (Number.isFinite(duration) && rampUp > duration) errors.ramp_up = "Ramp-up cannot be longer than the duration.";
  const rateRaw = $("rate").value.trim();
  const rate = rateRaw === "" ? null : Number(rateRaw);
  if (rate !== null && (!Number.isFinite(rate) || rate <= 0)) errors.rate = "A positive number of requests per second, or empty.";
  let headers = {};
  try { headers = parseHeaders($("headers").value); } catch (e) { errors.headers = e.message; }

  const authType = $("auth-type").value;
  let auth;
  if (authType === "bearer") {
    const token = $("auth-token").value.trim();
    if (!token) errors["auth-token"] = "Enter the token.";
    auth = { type: "bearer", token };
  } else if (authType === "basic") {
    const username = $("auth-username").value;
    if (!username) errors["auth-username"] = "Enter the user name.";
    auth = { type: "basic", username, password: $("auth-password").value };
  }

  const thresholds = $("thresholds").value.split(/[,\n]/).map((t) => t.trim()).filter(Boolean);
  const abortRaw = $("abort_on_error_rate").value.trim();
  const abortPct = abortRaw === "" ? null : Number(abortRaw);
  if (abortPct !== null && (!Number.isFinite(abortPct) || abortPct <= 0 || abortPct > 100)) {
    errors.abort_on_error_rate = "A percentage above 0 and at most 100, or empty.";
  }

  const fields = ["url", "users", "duration", "ramp_up", "rate", "headers", "auth-token", "auth-username",
                  "abort_on_error_rate"];
  for (const id of fields) setFieldError(id, errors[id]);
  if (Object.keys(errors).length) {
    if (errors.headers || errors["auth-token"] || errors["auth-username"]) $("advanced").open = true;
    if (errors.abort_on_error_rate) $("pass-fail").open = true;
    const first = fields.find((id) => errors[id]);
    $(first).focus();
    return null;
  }

  const payload = {
    url, users, duration, ramp_up: rampUp, method: $("method").value,
    mask_host: $("mask_host").checked, insecure: isHttps() && $("insecure").checked,
  };
  if (Object.keys(headers).length) payload.headers = headers;
  const body = $("body").value;
  if (body) payload.body = body;
  if (auth) payload.auth = auth;
  if (rate !== null) payload.rate = rate;
  const label = $("label").value.trim();
  if (label) payload.label = label;
  if (thresholds.length) payload.thresholds = thresholds;
  if (abortPct !== null) payload.abort_on_error_rate = `${abortPct}%`;
  return payload;
}

function syncAuthFields() {
  const type = $("auth-type").value;
  $("auth-bearer").hidden = type !== "bearer";
  $("auth-basic-user").hidden = type !== "basic";
  $("auth-basic-pass").hidden = type !== "basic";
}

async function onSubmit(event) {
  event.preventDefault();
  showFormError("");
  const payload = validate();
  if (!payload) return;
  const button = $("start-button");
  button.disabled = true;
  button.classList.add("busy");
  try {
    const result = await api("/api/start", { method: "POST", body: payload });
    if (!result || !result.uuid) throw new ApiError("The server did not return a run id.", 500, result);
    window.location.assign(`/test/${encodeURIComponent(result.uuid)}`);
  } catch (err) {
    let message = err.message || "The test could not be started.";
    if (err.status === 429) message = `Too many tests at once: ${message}`;
    showFormError(message);
    // a validation message that names a field goes next to it as well
    if (err.status === 400 && /url|host|address|scheme/i.test(message)) $("url").setAttribute("aria-invalid", "true");
    if (err.status === 400 && /threshold/i.test(message)) {
      $("pass-fail").open = true;
      $("thresholds").setAttribute("aria-invalid", "true");
    }
    button.disabled = false;
    button.classList.remove("busy");
  }
}

// ------------------------------------------------------------------ running

let runningSignature = "";

async function refreshRunning() {
  let runs;
  try {
    runs = listFrom(await api("/api/running"));
  } catch (e) {
    return;
  }
  const list = $("running");
  $("running-count").textContent = String(runs.length);
  const signature = runs.map((r) => r.uuid).join(",");
  if (!runs.length) {
    list.replaceChildren(el("li", { class: "empty" }, "No test is running."));
  } else {
    list.replaceChildren(...runs.map((run) => {
      const progress = typeof run.progress === "number" ? Math.max(0, Math.min(1, run.progress)) : null;
      const bits = [];
      if (typeof run.rps_last_second === "number") bits.push(`${fmtRps(run.rps_last_second)} req/s now`);
      if (run.users) bits.push(`${fmtInt(run.users)} VUs`);
      if (typeof run.elapsed_s === "number") bits.push(`${fmtSeconds(run.elapsed_s)} elapsed`);
      if (typeof run.remaining_s === "number") bits.push(`${fmtSeconds(run.remaining_s)} left`);
      else if (run.duration) bits.push(`${fmtSeconds(run.duration)} test`);
      const bar = el("span");
      if (progress !== null) bar.style.width = `${(progress * 100).toFixed(1)}%`;   // CSSOM, fine under a strict CSP
      return el("li", { class: "running-item", dataset: { uuid: run.uuid } },
        el("span", { class: "pulse", "aria-hidden": "true" }),
        el("div", { class: "running-main" },
          el("a", { href: `/test/${encodeURIComponent(run.uuid)}`, class: "running-link" },
            run.label ? `${run.label} — ${hostOf(run.url)}` : (run.url || run.uuid)),
          el("span", { class: "muted small" }, bits.join(" · "))),
        progress === null ? null : el("div", {
          class: "mini-progress", role: "progressbar", "aria-label": "progress",
          "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(progress * 100)),
        }, bar));
    }));
  }
  if (signature !== runningSignature) {
    const first = runningSignature === "";
    runningSignature = signature;
    if (!first || runs.length) loadHistory(historyPage);   // a run started or finished
  } else if (runs.length && history.anyRunning) {
    loadHistory(historyPage);                              // the running rows' live req/s
  }
}

// ------------------------------------------------------------------ history

let historyPage = 1;
const selected = new Map();          // uuid -> run row, across pages
const history = { search: "", sort: "newest", anyRunning: false, shown: "" };

function resultCell(run) {
  const badge = statusBadge(run.status, {}, run.result, run.result_reason);
  // (a run without thresholds shows its status alone)
  const extra = run.result === "passed" ? el("span", { class: "result-pill result-passed" }, "passed") : null;
  return el("td", { class: "result-cell" }, badge, extra);
}

function thresholdPills(run) {
  const items = (run.thresholds || []).map((t) => {
    const verdict = t.passed === true ? "pass" : t.passed === false ? "fail" : "pending";
    return el("span", { class: `threshold threshold-${verdict}`, dataset: { state: verdict } },
      `${t.expression} ${verdict === "pass" ? "✓" : verdict === "fail" ? "✗" : "…"}`);
  });
  if (run.stopped_by_circuit) items.push(el("span", { class: "threshold threshold-fail" }, "circuit breaker"));
  return items.length ? el("div", { class: "thresholds-line" }, items) : null;
}

function loadText(run) {
  const mode = run.mode === "rate" ? `${fmtRate(run.rate)}/s open` : "closed";
  const seconds = typeof run.measured_duration === "number" && run.status !== "running"
    ? run.measured_duration : run.duration;
  return `${fmtInt(run.users)} conn · ${fmtSeconds(seconds)} · ${mode}`;
}

function historyRow(run) {
  const id = encodeURIComponent(run.uuid);
  const checkbox = el("input", {
    type: "checkbox", class: "compare-check", value: run.uuid, id: `compare-${run.uuid}`,
    "aria-label": `Select run ${run.id ?? run.uuid} to compare`,
  });
  checkbox.checked = selected.has(run.uuid);
  checkbox.addEventListener("change", () => {
    if (checkbox.checked) selected.set(run.uuid, run);
    else selected.delete(run.uuid);
    syncCompare();
  });
  const running = run.status === "running";
  const title = run.label ? run.label : `Run ${run.id ?? ""}`.trim();
  const failed = run.result === "failed";
  const rps = running
    ? el("span", { class: "live-rps", title: "responses in the last second" }, `${fmtRps(run.rps_last_second)} now`)
    : fmtRps(run.rps);
  return el("tr", { id: `history-row-${run.uuid}`, class: failed ? "history-row row-failed" : "history-row",
                    dataset: { uuid: run.uuid, status: run.status || "", result: run.result || "" } },
    el("td", { class: "col-check" }, checkbox),
    resultCell(run),
    el("td", { class: "run-cell" },
      el("div", { class: "run-title" },
        el("a", { href: `/test/${id}`, class: "run-link" }, title),
        el("span", { class: "muted small" }, fmtDate(run.started_at))),
      el("p", { class: "history-url" }, run.url || ""),
      failed && run.result_reason ? el("p", { class: "history-reason" }, run.result_reason) : null,
      thresholdPills(run)),
    el("td", { class: "load-cell", "data-label": "Load" }, loadText(run)),
    el("td", { class: "num", "data-label": "Req/s" }, rps),
    el("td", { class: "num", "data-label": "p99" }, fmtMs(run.p99_ms)),
    el("td", { class: `num${run.errors ? " errors-cell" : ""}`, "data-label": "Errors" },
      typeof run.errors === "number" ? `${fmtInt(run.errors)}${run.total_requests ? ` (${fmtPct(run.errors / run.total_requests)})` : ""}` : "–"),
    el("td", { class: "reports" }, running ? el("span", { class: "muted small" }, "after the run") : reportLinks(run.uuid)));
}

let historyRequest = 0;              // the newest loadHistory call: older answers are dropped

async function loadHistory(page = 1) {
  const body = $("history-body");
  const mine = ++historyRequest;
  let data;
  const query = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE), sort: history.sort });
  if (history.search) query.set("q", history.search);
  try {
    data = await api(`/api/history?${query}`);
  } catch (err) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "8" }, `History unavailable: ${err.message}`)));
    return;
  }
  if (mine !== historyRequest) return;
  const runs = listFrom(data, "runs");
  const total = typeof data?.total === "number" ? data.total : runs.length;
  const perPage = data?.per_page || PER_PAGE;
  const pages = Math.max(1, Math.ceil(total / perPage));
  if (page > pages && total > 0) return loadHistory(pages);
  historyPage = data?.page || page;
  history.anyRunning = runs.some((r) => r.status === "running");
  const signature = JSON.stringify(runs);
  if (signature === history.shown && runs.length) return;      // nothing changed: keep the rows
  history.shown = signature;
  if (!runs.length) {
    const text = history.search ? `No run's label or URL contains “${history.search}”.` : "No runs yet — start one above.";
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "8" }, text)));
  } else {
    body.replaceChildren(...runs.map(historyRow));
  }
  $("history-page").textContent = total ? `Page ${historyPage} of ${pages} · ${fmtInt(total)} ${total === 1 ? "run" : "runs"}` : "";
  $("history-prev").disabled = historyPage <= 1;
  $("history-next").disabled = historyPage >= pages;
  document.body.dataset.historyLoaded = String(Date.now());
}

let searchTimer = null;

function onSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    history.search = $("history-search").value.trim();
    loadHistory(1);
  }, 250);
}

// ------------------------------------------------------------------ compare

function syncCompare() {
  const n = selected.size;
  $("compare-button").disabled = n !== 2;
  $("compare-hint").textContent = n === 2 ? "Two runs selected." :
    n > 2 ? "Select only two runs." : `Tick two runs to compare them (${n}/2).`;
}

function compareSelected() {
  if (selected.size !== 2) return;
  const [a, b] = [...selected.values()].sort((x, y) =>
    String(x.started_at || "").localeCompare(String(y.started_at || "")) || ((x.id || 0) - (y.id || 0)));
  // the older run is the baseline
  window.location.assign(`/compare?a=${encodeURIComponent(a.uuid)}&b=${encodeURIComponent(b.uuid)}`);
}

// ------------------------------------------------------------------ run again

/** `/?from=UUID`: the form filled with that run's settings. */
async function prefillFrom(runUuid) {
  let st;
  try {
    st = await api(`/api/status/${encodeURIComponent(runUuid)}`);
  } catch (err) {
    showFormError(`Cannot load the run to repeat: ${err.message}`);
    return;
  }
  const s = st.settings || {};
  const note = [];
  if (st.mask_host) note.push("its host was masked: enter the URL again");
  else $("url").value = st.url || "";
  $("method").value = s.method || st.method || "GET";
  $("users").value = String(s.connections ?? st.users ?? 10);
  if (typeof s.planned_duration_s === "number") $("duration").value = String(Math.round(s.planned_duration_s));
  $("ramp_up").value = String(s.ramp_up_s || 0);
  $("rate").value = s.mode === "rate" && s.rate ? String(s.rate) : "";
  $("label").value = st.label || "";
  $("mask_host").checked = Boolean(st.mask_host);
  $("insecure").checked = Boolean(s.insecure);
  syncInsecureField();
  const thresholds = (st.thresholds || []).map((t) => t.expression).filter(Boolean);
  $("thresholds").value = thresholds.join(", ");
  if (typeof st.abort_on_error_rate === "number") $("abort_on_error_rate").value = String(+(st.abort_on_error_rate * 100).toFixed(4));
  if (thresholds.length || typeof st.abort_on_error_rate === "number") $("pass-fail").open = true;
  note.push("headers, body and authentication are not kept with a run: add them again if it needs them");
  const box = $("prefill-note");
  box.textContent = `Filled in from ${st.label || `run ${st.id ?? runUuid}`}: ${note.join("; ")}.`;
  box.hidden = false;
  document.body.dataset.prefilled = runUuid;
}

// ------------------------------------------------------------------ init

function init() {
  initTheme();
  $("start-form").addEventListener("submit", onSubmit);
  $("auth-type").addEventListener("change", syncAuthFields);
  syncAuthFields();
  $("url").addEventListener("input", syncInsecureField);
  syncInsecureField();
  for (const id of ["url", "users", "duration", "ramp_up", "rate", "headers", "auth-token", "auth-username"]) {
    $(id).addEventListener("input", () => setFieldError(id, ""));
  }
  $("history-prev").addEventListener("click", () => loadHistory(Math.max(1, historyPage - 1)));
  $("history-next").addEventListener("click", () => loadHistory(historyPage + 1));
  $("history-search").addEventListener("input", onSearch);
  $("history-sort").addEventListener("change", () => { history.sort = $("history-sort").value; loadHistory(1); });
  $("compare-button").addEventListener("click", compareSelected);
  syncCompare();
  const params = new URLSearchParams(window.location.search);
  if (params.get("from")) prefillFrom(params.get("from"));
  if (params.get("deleted")) {
    $("history-note").textContent = "The run was deleted.";
    $("history-note").hidden = false;
  }
  loadHistory(1);
  refreshRunning();
  setInterval(refreshRunning, RUNNING_POLL_MS);
}

init();
