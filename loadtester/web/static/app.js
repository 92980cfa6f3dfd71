// Shared by both pages: theme toggle, API calls, formatting, small DOM helpers.

const THEME_KEY = "loadtester-theme";
const themeListeners = [];

export function currentTheme() {
  return document.documentElement.getAttribute("data-theme") === "dark" ? "dark" : "light";
}

export function setTheme(theme, { persist = true } = {}) {
  document.documentElement.setAttribute("data-theme", theme);
  if (persist) {
    try { localStorage.setItem(THEME_KEY, theme); } catch (e) { /* storage blocked */ }
  }
  syncThemeToggle();
  for (const fn of themeListeners) fn(theme);
}

export function onThemeChange(fn) { themeListeners.push(fn); }

function syncThemeToggle() {
  const button = document.getElementById("theme-toggle");
  if (!button) return;
  const dark = currentTheme() === "dark";
  button.setAttribute("aria-pressed", String(dark));
  button.title = dark ? "Switch to light theme" : "Switch to dark theme";
  const label = button.querySelector(".theme-label");
  if (label) label.textContent = dark ? "Light" : "Dark";
}

export function initTheme() {
  const button = document.getElementById("theme-toggle");
  if (button) {
    button.addEventListener("click", () => setTheme(currentTheme() === "dark" ? "light" : "dark"));
  }
  // follow the system while the person has not chosen
  const media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  if (media && media.addEventListener) {
    media.addEventListener("change", (event) => {
      let stored = null;
      try { stored = localStorage.getItem(THEME_KEY); } catch (e) { /* ignore */ }
      if (!stored) setTheme(event.matches ? "dark" : "light", { persist: false });
    });
  }
  syncThemeToggle();
}

// ------------------------------------------------------------------ access token
// A server started with LOADTESTER_TOKEN wants `Authorization: Bearer <token>` on /api/* and
// /report/* (or `?access_token=` on GET, for links and EventSource).  The page takes it once
// from `?token=` in its address or from the prompt shown on a 401, and keeps it for the tab.

const TOKEN_KEY = "loadtester-token";

export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
}

function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (e) { /* storage blocked */ }
}

(function tokenFromAddress() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    setToken(token);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
})();

/** `path` with ?access_token= when a token is set (for links and EventSource). */
export function withToken(path) {
  const token = getToken();
  if (!token) return path;
  return `${path}${path.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(token)}`;
}

let tokenPromptShown = false;

function promptForToken(message) {
  if (tokenPromptShown) return;
  tokenPromptShown = true;
  const input = el("input", { type: "password", id: "token-input", autocomplete: "off", required: true });
  const form = el("form", { class: "token-form", id: "token-form" },
    el("label", { for: "token-input" }, message),
    input,
    el("button", { type: "submit", class: "primary-button" }, "Use token"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    setToken(input.value.trim());
    window.location.reload();
  });
  const banner = el("section", { class: "card token-banner", role: "alert" }, form);
  const main = document.getElementById("main");
  if (main) main.prepend(banner);
  input.focus();
}

// ------------------------------------------------------------------ API

export class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: { Accept: "application/json" } };
  const token = getToken();
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError("The server cannot be reached.", 0, null);
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = null; }
  }
  if (response.status === 401) {
    if (getToken()) setToken("");
    promptForToken("This server needs an access token (LOADTESTER_TOKEN):");
  }
  if (!response.ok) {
    const message = (data && (data.error || data.detail)) || `${response.status} ${response.statusText}`.trim();
    throw new ApiError(message, response.status, data);
  }
  return data;
}

export function listFrom(data, ...keys) {
  if (Array.isArray(data)) return data;
  if (!data) return [];
  for (const key of keys) if (Array.isArray(data[key])) return data[key];
  return [];
}

// ------------------------------------------------------------------ formatting

const nf = (digits) => new Intl.NumberFormat("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const NF0 = nf(0), NF1 = nf(1), NF2 = nf(2);

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

export function fmtInt(v) { return isNum(v) ? NF0.format(v) : "–"; }
export function fmtRps(v) { return isNum(v) ? (v >= 1000 ? NF0.format(v) : NF2.format(v)) : "–"; }
/** A rate asked for (req/s): whole numbers without decimals. */
export function fmtRate(v) { return isNum(v) && Number.isInteger(v) ? NF0.format(v) : fmtRps(v); }
export function fmtPct(v) { return isNum(v) ? `${NF1.format(v * 100)}%` : "–"; }

export function fmtMs(v) {
  if (!isNum(v)) return "–";
  if (v >= 10000) return `${NF1.format(v / 1000)} s`;
  if (v >= 100) return `${NF0.format(v)} ms`;
  if (v >= 1) return `${NF2.format(v)} ms`;
  return `${NF0.format(v * 1000)} µs`;
}

export function fmtBytes(v) {
  if (!isNum(v)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i ? NF1.format(v) : NF0.format(v)} ${units[i]}`;
}

export function fmtSeconds(v) {
  if (!isNum(v)) return "–";
  v = Math.max(0, Math.round(v));
  if (v < 60) return `${v}s`;
  const m = Math.floor(v / 60), s = v % 60;
  if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function fmtDate(value) {
  if (!value) return "–";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const opts = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" };
  if (d.getFullYear() !== new Date().getFullYear()) opts.year = "numeric";
  return d.toLocaleString(undefined, opts);
}

export function hostOf(url) {
  try { return new URL(url).host; } catch (e) { return url || ""; }
}

// ------------------------------------------------------------------ DOM

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const STATUSES = ["running", "completed", "stopped", "failed", "interrupted"];

// A run's `result` (the API's verdict beside its status): "failed" reads as a red "failed"
// badge whatever the status (a completed run that got no successful response failed).
function badgeLook(status, result) {
  const s = String(status || "unknown").toLowerCase();
  if (result === "failed") return { cls: "badge badge-failed badge-result-failed", text: "failed" };
  return { cls: `badge badge-${STATUSES.includes(s) ? s : "unknown"}`, text: s };
}

export function statusBadge(status, attrs = {}, result = null, reason = null) {
  const look = badgeLook(status, result);
  return el("span", { class: look.cls, title: reason || undefined,
                      dataset: { status: String(status || ""), result: result || "" }, ...attrs }, look.text);
}

export function setBadge(node, status, result = null, reason = null) {
  const look = badgeLook(status, result);
  node.className = look.cls;
  node.textContent = look.text;
  node.dataset.status = String(status || "unknown").toLowerCase();
  node.dataset.result = result || "";
  if (reason) node.title = reason; else node.removeAttribute("title");
}

export function reportLinks(uuid) {
  const id = encodeURIComponent(uuid);
  return [
    el("a", { class: "link-button", href: withToken(`/report/${id}`), target: "_blank", rel: "noopener",
              "aria-label": "HTML report" }, "HTML"),
    el("a", { class: "link-button", href: withToken(`/api/report/${id}`), download: `loadtest-${uuid}.pdf`,
              "aria-label": "PDF report" }, "PDF"),
  ];
}
