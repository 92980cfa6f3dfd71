"""`loadtester serve`: the web server (Starlette on uvicorn, uvloop + httptools).

Runs are `loadtester blast` subprocesses of this server, started with PR_SET_PDEATHSIG=SIGKILL
so that a server killed even with -9 takes its blasts along (the store then marks such a run
'interrupted' on the next open).  The server picks the run's uuid (uuid4) and hands it to the
blast (`--uuid`), so POST /api/start answers at once.  Everything the API reports about a run
comes from the database - the test_runs row and its per-second metric_windows rows, read
through read-only connections opened per request - never from the subprocess's pipes (stdout
and stderr are only drained; the tail of stderr is kept to explain a blast that failed before
it stored anything).  Stop = SIGTERM to the blast, which stops cleanly and stores 'stopped'.

API (JSON; errors are {"error": "..."} with the matching status):
  POST /api/start                 {url, users, duration, ramp_up, method, headers, body, auth,
                                  mask_host, rate, label} -> 201 {uuid, status: "running"}
  GET  /api/status/{uuid}         status, progress, elapsed/remaining, summary line
  GET  /api/metrics/{uuid}        the report dict (as `blast --json`) + live fields
  GET  /api/timeseries/{uuid}     {"seconds": [{second (1-based), rps, errors, success_rate
                                  (0..1), p50_ms, p95_ms, p99_ms, ...}]}
  GET  /api/running               runs in progress
  POST /api/stop/{uuid}           202 {uuid, status: "stopping"}; 404 unknown; 409 not running
  GET  /api/history?page=&per_page=
  GET  /api/compare?a=UUID&b=UUID loadtester.compare.compare_runs
  GET  /api/stream/{uuid}         Server-Sent Events: `event: window` per closed second (replays
                                  the run so far; `?since=N` or Last-Event-ID skips seconds <= N),
                                  then `event: done` with the final status
  GET  /api/report/{uuid}         PDF download;  GET /report/{uuid}: HTML report (no JS)
  GET  /healthz                   {"status": "ok", "db": "ok"} or 503
  GET  /, /test/{uuid}, /static/  the web UI (loadtester/web/)

Safety: targets are checked by loadtester.ssrf (loopback/private refused unless
--allow-private; cloud metadata always); POST /api/start is rate limited per client address
(token bucket, --rate-limit) and capped at --max-per-client running tests per client and
--max-running in all.  With LOADTESTER_TOKEN set, /api/* and /report/* need
`Authorization: Bearer <token>` (or `?access_token=` on GET, for links and EventSource).
Unsafe methods with a foreign Origin are refused; bound to a loopback address, only loopback
Host headers are accepted (DNS rebinding).  Every response carries X-Request-ID; one JSON log
line per request goes to stderr.  SIGTERM/SIGINT: stop every blast (SIGTERM), wait up to 10 s
for them to store 'stopped', then exit.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as _dt
import functools
import hmac
import json
import logging
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid as _uuid
from dataclasses import dataclass, field

from loadtester import _engine, store
from loadtester.analysis import aggregate
from loadtester.analysis.report import report_from_row
from loadtester.store.connection import dict_rows
from loadtester.units import UnitError, parse_duration_s, parse_iso_utc, utc_now_iso
from loadtester.run.proc import catches_sigterm, children, die_with_parent
from loadtester.web import htmlreport, ssrf
from loadtester.spec import SpecError, parse_rate, parse_url

log = logging.getLogger("loadtester.serve")

WEB_DIR = pathlib.Path(__file__).resolve().parent / "static"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

MAX_USERS = 1000
MAX_DURATION_S = 3600
MAX_RATE = 100_000
MAX_BODY_BYTES = 1 << 20
MAX_JSON_BYTES = 2 << 20
MAX_HEADERS = 64
MAX_HEADER_VALUE = 8192
MAX_LABEL = 200
MAX_URL = 2048
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
FORBIDDEN_HEADERS = {"content-length", "transfer-encoding"}
DEFAULT_USERS = 10
DEFAULT_DURATION_S = 30.0
DNS_TIMEOUT_S = 5.0
SHUTDOWN_WAIT_S = 10.0
POLL_S = 0.5
KEEPALIVE_S = 15.0




# --------------------------------------------------------------------------- small helpers

class ServeError(Exception):
    """The server cannot start; the message is one line."""


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _clean(value):
    """JSON-safe: non-finite floats become null, bytes are dropped."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if not isinstance(v, (bytes, memoryview))}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _num(value: float) -> str:
    """A number as the CLI parses it: no exponent, no trailing zeros."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def mask_host(host: str | None) -> str | None:
    """'example.com' -> 'ex*****.com' (first two characters and the last label kept)."""
    if not host:
        return host
    dot = host.rfind(".")
    tail = host[dot:] if dot > 2 else ""
    head = host[:2]
    return head + "*" * max(1, len(host) - len(head) - len(tail)) + tail


def display_url(url: str | None, host: str | None, masked: bool) -> str | None:
    """The URL as the API shows it: host masked when the run asked for it; never a password."""
    if not url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        hostname, port = parts.hostname or "", parts.port
    except ValueError:
        return mask_host(url) if masked else url
    if not masked and "@" not in parts.netloc:
        return url
    shown = mask_host(hostname) if masked else hostname
    if ":" in shown and not masked:
        shown = f"[{shown}]"
    netloc = shown + (f":{port}" if port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def summary_line(host: str | None, users, duration, success_rate, rps, avg_ms,
                 running: bool = False) -> str:
    """PipeOps' one-liner: 'Tested example.com with 10 virtual users for 30s - 98.5% success
    rate, 125.32 RPS, 45.23ms avg latency'."""
    verb = "Testing" if running else "Tested"
    length = f"{_num(duration)}s" if duration else "?"
    rate = f"{success_rate * 100:.1f}%" if success_rate is not None else "n/a"
    speed = f"{rps:.2f}" if rps is not None else "n/a"
    avg = f"{avg_ms:.2f}ms" if avg_ms is not None else "n/a"
    return (f"{verb} {host or '?'} with {users if users is not None else '?'} virtual users for "
            f"{length} - {rate} success rate, {speed} RPS, {avg} avg latency")


# --------------------------------------------------------------------------- validation

@dataclass
class StartParams:
    url: str
    host: str
    users: int
    duration_s: float
    ramp_up_s: float | None = None
    rate: float | None = None
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str | None = None
    mask_host: bool = False
    label: str = ""


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _seconds(value, what: str, default=None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool):
        raise _bad(f"{what} must be a number of seconds or a duration such as '30s'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration_s(value, what)
        except UnitError as exc:
            raise _bad(str(exc)) from None
    else:
        raise _bad(f"{what} must be a number of seconds or a duration such as '30s'")
    if not math.isfinite(seconds):
        raise _bad(f"{what} must be a finite number")
    return seconds


def validate_start(payload) -> StartParams:
    """The body of POST /api/start, checked; every problem is a 400 with one clear line."""
    if not isinstance(payload, dict):
        raise _bad("the request body must be a JSON object")
    url = payload.get("url")
    if not isinstance(url, str) or not url.strip():
        raise _bad("url is required: an http:// or https:// URL")
    url = url.strip()
    if len(url) > MAX_URL:
        raise _bad(f"url is longer than {MAX_URL} characters")
    if CONTROL_RE.search(url) or " " in url:
        raise _bad("url must not contain spaces or control characters")
    try:
        target = parse_url(url)
    except SpecError as exc:
        raise _bad(str(exc)) from None

    users = payload.get("users", DEFAULT_USERS)
    if isinstance(users, float) and users.is_integer():
        users = int(users)
    if isinstance(users, bool) or not isinstance(users, int):
        raise _bad(f"users must be a whole number from 1 to {MAX_USERS}")
    if not 1 <= users <= MAX_USERS:
        raise _bad(f"users must be from 1 to {MAX_USERS} (got {users})")

    duration = _seconds(payload.get("duration"), "duration", DEFAULT_DURATION_S)
    if not 1 <= duration <= MAX_DURATION_S:
        raise _bad(f"duration must be from 1 to {MAX_DURATION_S} seconds (got {_num(duration)})")

    ramp_up = _seconds(payload.get("ramp_up"), "ramp_up")
    if ramp_up is not None:
        if ramp_up < 0:
            raise _bad("ramp_up must not be negative")
        if ramp_up > duration:
            raise _bad(f"ramp_up ({_num(ramp_up)} s) must not be longer than the duration "
                       f"({_num(duration)} s)")
        if ramp_up == 0:
            ramp_up = None

    rate = payload.get("rate")
    if rate is not None:
        if isinstance(rate, bool):
            raise _bad("rate must be a number of requests per second")
        if isinstance(rate, str):
            try:
                rate = parse_rate(rate)
            except SpecError as exc:
                raise _bad(str(exc)) from None
        if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise _bad("rate must be a number of requests per second above 0")
        if rate > MAX_RATE:
            raise _bad(f"rate must be at most {MAX_RATE} requests per second")
        rate = float(rate)

    method = payload.get("method") or "GET"
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise _bad(f"method must be one of {', '.join(METHODS)}")
    method = method.upper()

    headers_in = payload.get("headers") or {}
    if not isinstance(headers_in, dict):
        raise _bad("headers must be an object of header name -> value (strings)")
    if len(headers_in) > MAX_HEADERS:
        raise _bad(f"at most {MAX_HEADERS} headers")
    headers: list[tuple[str, str]] = []
    for name, value in headers_in.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise _bad("headers must be an object of header name -> value (strings)")
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise _bad(f"header {name!r} must not contain CR or LF")
        if not HEADER_NAME_RE.match(name):
            raise _bad(f"invalid header name {name!r}")
        if CONTROL_RE.search(value.replace("\t", " ")):
            raise _bad(f"header {name!r} has control characters in its value")
        if len(value) > MAX_HEADER_VALUE:
            raise _bad(f"header {name!r} is longer than {MAX_HEADER_VALUE} characters")
        if name.lower() in FORBIDDEN_HEADERS:
            raise _bad(f"header {name!r} is set by loadtester itself")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise _bad(f"header {name!r} must be Latin-1 text") from None
        headers.append((name, value.strip()))

    auth = payload.get("auth")
    if auth:
        if not isinstance(auth, dict) or auth.get("type") not in ("bearer", "basic"):
            raise _bad('auth must be {"type": "bearer", "token": ...} or '
                       '{"type": "basic", "username": ..., "password": ...}')
        if any(n.lower() == "authorization" for n, _ in headers):
            raise _bad("give either auth or an Authorization header, not both")
        if auth["type"] == "bearer":
            token = auth.get("token")
            if not isinstance(token, str) or not token or CONTROL_RE.search(token) \
                    or len(token) > MAX_HEADER_VALUE:
                raise _bad("auth.token must be a non-empty string without control characters")
            try:
                token.encode("latin-1")
            except UnicodeEncodeError:
                raise _bad("auth.token must be Latin-1 text") from None
            headers.append(("Authorization", f"Bearer {token}"))
        else:
            user, password = auth.get("username"), auth.get("password", "")
            if not isinstance(user, str) or not isinstance(password, str) or ":" in user \
                    or CONTROL_RE.search(user + password):
                raise _bad("auth.username and auth.password must be strings (no ':' in the "
                           "username, no control characters)")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers.append(("Authorization", f"Basic {token}"))

    body = payload.get("body")
    if body is not None:
        if not isinstance(body, str):
            raise _bad("body must be a string")
        if len(body.encode("utf-8")) > MAX_BODY_BYTES:
            raise _bad(f"body is larger than {MAX_BODY_BYTES} bytes (1 MiB)")
        body = body or None

    masked = payload.get("mask_host", False)
    if not isinstance(masked, bool):
        raise _bad("mask_host must be true or false")

    label = payload.get("label") or ""
    if not isinstance(label, str) or len(label) > MAX_LABEL or CONTROL_RE.search(label):
        raise _bad(f"label must be a string of at most {MAX_LABEL} characters, no control "
                   "characters")

    return StartParams(url=url, host=target.host, users=users, duration_s=duration,
                       ramp_up_s=ramp_up, rate=rate, method=method, headers=headers, body=body,
                       mask_host=masked, label=label.strip())


# --------------------------------------------------------------------------- rate limiting

class RateLimiter:
    """A token bucket per client address: `burst` starts at once, refilled at `per_s`."""

    def __init__(self, burst: int, per_s: float):
        self.burst = burst
        self.per_s = per_s
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, text: str) -> "RateLimiter | None":
        """'10/min', '30/h', '5/s', '0' (off)."""
        match = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(s|sec|m|min|h|hour))?\s*", str(text))
        if not match:
            raise ValueError(f"invalid rate limit {text!r}: use N/min, N/h or 0 (off)")
        count = int(match.group(1))
        if count == 0:
            return None
        period = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}[match.group(2) or "min"]
        return cls(count, count / period)

    def take(self, key: str) -> tuple[bool, int]:
        """(allowed, seconds to wait before the next token)."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.per_s)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                allowed, wait = True, 0
            else:
                self._buckets[key] = (tokens, now)
                allowed, wait = False, max(1, math.ceil((1 - tokens) / self.per_s))
            if len(self._buckets) > 10_000:          # forget clients whose bucket is full again
                full = [k for k, (t, l) in self._buckets.items()
                        if t + (now - l) * self.per_s >= self.burst]
                for k in full:
                    del self._buckets[k]
        return allowed, wait


# --------------------------------------------------------------------------- blast processes


@dataclass
class RunProcess:
    uuid: str
    client: str
    params: StartParams
    proc: subprocess.Popen
    started_mono: float
    started_at: str
    body_file: str | None = None
    returncode: int | None = None
    stderr_tail: str = ""
    stop_requested: bool = False
    stop_signalled: bool = False
    ended_mono: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def alive(self) -> bool:
        return not self.done.is_set()

    def error_line(self) -> str:
        lines = [line.strip() for line in self.stderr_tail.splitlines() if line.strip()]
        return lines[-1] if lines else f"blast exited with status {self.returncode}"


class RunManager:
    """The blast subprocesses this server started.

    spawn() must run on a thread that lives as long as the server (the event loop's): the
    parent-death signal fires when the *thread* that forked the child ends."""

    KEEP_FINISHED = 500

    def __init__(self, db_path: pathlib.Path):
        self.db_path = db_path
        self.runs: dict[str, RunProcess] = {}
        self.lock = threading.Lock()
        self.tmpdir = tempfile.mkdtemp(prefix="loadtester-serve-")
        self.shutting_down = False
        self._stop_wanted = threading.Event()
        self._stopper_thread: threading.Thread | None = None

    def get(self, run_uuid: str) -> RunProcess | None:
        with self.lock:
            return self.runs.get(run_uuid)

    def active(self, client: str | None = None) -> list[RunProcess]:
        with self.lock:
            return [r for r in self.runs.values()
                    if r.alive and (client is None or r.client == client)]

    def command(self, run_uuid: str, params: StartParams, body_file: str | None) -> list[str]:
        argv = [sys.executable, "-m", "loadtester", "blast", "-c", str(params.users),
                "-d", f"{_num(params.duration_s)}s", "--uuid", run_uuid,
                "--db", str(self.db_path), "--json", "--no-progress", "-m", params.method]
        if params.rate:
            argv.append(f"--rate={_num(params.rate)}")
        if params.ramp_up_s:
            argv.append(f"--ramp-up={_num(params.ramp_up_s)}s")
        for name, value in params.headers:
            argv.append(f"--header={name}: {value}")
        if body_file:
            argv.append(f"--body-file={body_file}")
        if params.mask_host:
            argv.append("--mask-host")
        if params.label:
            argv.append(f"--label={params.label}")
        argv += ["--", params.url]
        return argv

    def spawn(self, params: StartParams, client: str) -> RunProcess:
        run_uuid = str(_uuid.uuid4())
        body_file = None
        if params.body:
            # argv strings are capped at 128 KiB on Linux: bodies go through a private file.
            body_file = os.path.join(self.tmpdir, f"{run_uuid}.body")
            fd = os.open(body_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(params.body.encode("utf-8"))
        env = {k: v for k, v in os.environ.items() if k not in ("LOADTESTER_TOKEN", "DB_PATH")}
        package_root = pathlib.Path(__file__).resolve().parent.parent
        if (package_root / "setup.py").exists():      # a source checkout: import this copy
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(package_root), env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                self.command(run_uuid, params, body_file), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True,
                start_new_session=True, preexec_fn=functools.partial(die_with_parent, os.getpid()))
        except OSError:
            if body_file:
                with contextlib.suppress(OSError):
                    os.unlink(body_file)
            raise
        run = RunProcess(uuid=run_uuid, client=client, params=params, proc=proc,
                         started_mono=time.monotonic(), started_at=utc_now_iso(),
                         body_file=body_file)
        with self.lock:
            self.runs[run_uuid] = run
            self._forget_old()
        threading.Thread(target=self._watch, args=(run,), name=f"blast-{run_uuid[:8]}",
                         daemon=True).start()
        self._ensure_stopper()
        return run

    def _forget_old(self) -> None:
        finished = [r for r in self.runs.values() if not r.alive]
        if len(finished) > self.KEEP_FINISHED:
            finished.sort(key=lambda r: r.ended_mono or 0)
            for r in finished[:len(finished) - self.KEEP_FINISHED]:
                del self.runs[r.uuid]

    def _watch(self, run: RunProcess) -> None:
        try:
            _out, err = run.proc.communicate()       # drains both pipes; the data is unused
            run.stderr_tail = (err or b"")[-4000:].decode("utf-8", "replace")
        except Exception as exc:                    # pragma: no cover - defensive
            run.stderr_tail = str(exc)
            run.proc.wait()
        run.returncode = run.proc.returncode
        run.ended_mono = time.monotonic()
        if run.body_file:
            with contextlib.suppress(OSError):
                os.unlink(run.body_file)
        if run.returncode != 0:
            # Killed or failed: let the store close out a row left 'running' (it only touches
            # rows whose writer is gone).
            with contextlib.suppress(Exception):
                store.open_database(self.db_path).close()
        run.done.set()
        _log_event("run_exited", uuid=run.uuid, returncode=run.returncode,
                   seconds=round(run.ended_mono - run.started_mono, 3),
                   error=run.error_line() if run.returncode not in (0, None) else None)

    # Stopping.  A blast turns SIGTERM into a clean stop (status 'stopped') only once its
    # runner has installed the handler; before that (interpreter start-up, opening the
    # database) SIGTERM would kill it outright and the run would end 'failed'/'interrupted',
    # and after the run's end the handler is gone again while it writes the summary.  So the
    # signal is sent only while /proc/<pid>/status shows SIGTERM caught; until then a stop
    # stays pending and the stopper thread retries every STOP_POLL_S.
    STOP_POLL_S = 0.05

    def _ready_to_stop(self, pid: int) -> bool | None:
        """True when the blast and its worker processes all catch SIGTERM (a worker sent
        SIGTERM before its handler is in place dies, and the run is stored 'failed');
        None when /proc cannot tell."""
        main = catches_sigterm(pid)
        if main is not True:
            return main
        workers = children(pid)
        if not workers:
            return False
        return all(catches_sigterm(k) is not False for k in workers)

    def _signal_if_ready(self, run: RunProcess) -> None:
        if run.stop_signalled or run.done.is_set() or run.proc.returncode is not None:
            return
        ready = self._ready_to_stop(run.proc.pid)
        if ready is False:
            return
        run.stop_signalled = True
        with contextlib.suppress(OSError):
            os.kill(run.proc.pid, signal.SIGTERM)

    def _stopper(self) -> None:
        while True:
            pending = [r for r in list(self.runs.values())
                       if r.stop_requested and not r.stop_signalled and not r.done.is_set()]
            for run in pending:
                self._signal_if_ready(run)
            if not pending and not self.shutting_down:
                self._stop_wanted.wait(1.0)
                self._stop_wanted.clear()
            else:
                time.sleep(self.STOP_POLL_S)

    def _ensure_stopper(self) -> None:
        if self._stopper_thread is None:
            self._stopper_thread = threading.Thread(target=self._stopper, name="blast-stopper",
                                                    daemon=True)
            self._stopper_thread.start()

    def stop(self, run: RunProcess) -> None:
        run.stop_requested = True
        self._signal_if_ready(run)
        if not run.stop_signalled:
            self._ensure_stopper()
            self._stop_wanted.set()

    def stop_all(self) -> None:
        """Ask every live blast to stop.  Safe in a signal handler: no locks, no threads
        started (the stopper thread runs from the first spawn on)."""
        self.shutting_down = True
        for run in list(self.runs.values()):
            if not run.done.is_set():
                run.stop_requested = True
                self._signal_if_ready(run)
        # (no Event.set() here: it takes a lock the interrupted thread might hold; the
        # stopper thread notices shutting_down within a second)

    def wait_all(self, timeout_s: float) -> None:
        """Wait for every blast to end; SIGKILL those still running after timeout_s."""
        deadline = time.monotonic() + timeout_s
        self.stop_all()
        self._stop_wanted.set()
        for run in list(self.runs.values()):
            run.done.wait(max(0.0, deadline - time.monotonic()))
        late = [r for r in list(self.runs.values()) if not r.done.is_set()]
        for run in late:
            _log_event("run_killed", uuid=run.uuid, reason="did not stop within the shutdown wait")
            with contextlib.suppress(OSError):
                run.proc.kill()
        for run in late:
            run.done.wait(5)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------- per-second data

_WINDOW_COLUMNS = ("second, worker, requests, successes, errors, error_kinds, bytes, status_codes, "
                   "latency_hist, service_hist, loop_lag_us, max_wait_us")


def _second_rows(group: list[dict]) -> tuple[dict, aggregate.Totals]:
    """One timeseries row from one second's windows (all workers), and their Totals."""
    base = aggregate.merged_seconds(group, percentiles=(50, 95, 99), detail=True)[0]
    attempts = base["requests"]
    row = {
        "second": base["second"] + 1,                   # 1-based: second N covers (N-1, N]
        "rps": base["responses"],                      # responses completed in this second
        "requests": attempts,
        "errors": base["errors"],                      # attempts that were not successes
        "success_rate": (base["successes"] / attempts) if attempts else None,
        "p50_ms": base["p50_ms"], "p95_ms": base["p95_ms"], "p99_ms": base["p99_ms"],
        "max_ms": base["max_ms"],
    }
    return row, base["totals"]


class _Totals:
    """Counters added up over windows (what the summary columns hold once a run ends)."""

    def __init__(self):
        self.requests = self.successes = self.transport_errors = self.bytes = self.max_wait_us = 0
        self.status: collections.Counter = collections.Counter()
        self.kinds: collections.Counter = collections.Counter()
        self.latency = _engine.Histogram()
        self.service = _engine.Histogram()

    def add(self, window: dict) -> None:
        """One window's counters; its latency is merged per second by the caller."""
        self.requests += window["requests"] or 0
        self.successes += window["successes"] or 0
        self.transport_errors += window["errors"] or 0
        self.bytes += window["bytes"] or 0
        self.max_wait_us = max(self.max_wait_us, window.get("max_wait_us") or 0)
        if window.get("status_codes"):
            self.status.update({str(k): int(v) for k, v in json.loads(window["status_codes"]).items()})
        if window.get("error_kinds"):
            self.kinds.update({str(k): int(v) for k, v in json.loads(window["error_kinds"]).items()})
        self.service.merge(aggregate.hist_from_blob(window.get("service_hist")))

    def merged_with(self, other: "_Totals") -> "_Totals":
        out = _Totals()
        for t in (self, other):
            out.requests += t.requests
            out.successes += t.successes
            out.transport_errors += t.transport_errors
            out.bytes += t.bytes
            out.max_wait_us = max(out.max_wait_us, t.max_wait_us)
            out.status.update(t.status)
            out.kinds.update(t.kinds)
            out.latency.merge(t.latency)
            out.service.merge(t.service)
        return out

    def row_columns(self) -> dict:
        """test_runs summary columns as the writer would have stored them."""
        total = self.latency.total
        return {
            "total_requests": self.requests, "success_count": self.successes,
            "error_count": self.requests - self.successes, "bytes": self.bytes,
            "status_codes": json.dumps(dict(sorted(self.status.items(), key=lambda kv: int(kv[0])))),
            "errors_by_kind": json.dumps(dict(self.kinds)),
            "latency_hist": self.latency.to_bytes(), "service_hist": self.service.to_bytes(),
            "avg_latency": self.latency.mean_us / 1000 if total else None,
            "p99": self.latency.value_at_percentile(99) / 1000 if total else None,
        }


class _Series:
    """One run's per-second rows, merged incrementally: a second is merged once, when it is
    closed (every worker stored it, or the run is over); later polls read only newer rows."""

    def __init__(self, run_id: int, workers: int):
        self.lock = threading.Lock()
        self.run_id = run_id
        self.workers = max(1, int(workers or 1))
        self.closed_upto = -1                        # last closed stored (0-based) second
        self.rows: list[dict] = []
        self.totals = aggregate.Totals()
        self.tail_rows: list[dict] = []
        self.tail_totals = aggregate.Totals()
        self.final = False

    def update(self, conn, running: bool) -> None:
        if self.final:
            return
        groups = aggregate.by_second(store.run_windows(conn, self.run_id, after_second=self.closed_upto))
        self.tail_rows, self.tail_totals = [], aggregate.Totals()
        closing = True
        for second, group in groups.items():
            row, totals = _second_rows(group)
            if closing and (not running or len(group) >= self.workers):
                self.rows.append(row)
                self.totals.merge(totals)
                self.closed_upto = second
            else:
                closing = False
                self.tail_rows.append(row)
                self.tail_totals.merge(totals)
        if not running:
            self.final = True

    def snapshot(self) -> "SeriesSnapshot":
        """A copy the caller may read without the lock (the next update mutates these)."""
        totals = aggregate.Totals()
        totals.merge(self.totals)
        totals.merge(self.tail_totals)
        return SeriesSnapshot(closed=list(self.rows), rows=self.rows + self.tail_rows, totals=totals)


@dataclass
class SeriesSnapshot:
    closed: list[dict]          # seconds every worker has stored (final)
    rows: list[dict]            # closed + the newest, still open seconds
    totals: aggregate.Totals    # over all rows


class SeriesCache:
    def __init__(self, max_runs: int = 64):
        self._lock = threading.Lock()
        self._runs: collections.OrderedDict = collections.OrderedDict()
        self.max_runs = max_runs

    def get(self, conn, row: dict) -> SeriesSnapshot:
        key = (row["id"], row["uuid"])
        with self._lock:
            series = self._runs.get(key)
            if series is None:
                series = self._runs[key] = _Series(row["id"], row.get("workers") or 1)
            self._runs.move_to_end(key)
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        with series.lock:
            series.update(conn, running=row["status"] == "running")
            return series.snapshot()


# --------------------------------------------------------------------------- the app state

@dataclass
class ServeContext:
    db_path: pathlib.Path
    allow_private: bool = False
    token: str | None = None
    limiter: RateLimiter | None = None
    max_per_client: int = 3
    max_running: int = 10
    web_dir: pathlib.Path = WEB_DIR
    loopback_only_hosts: bool = False
    manager: RunManager = None
    cache: SeriesCache = field(default_factory=SeriesCache)

    def __post_init__(self):
        if self.manager is None:
            self.manager = RunManager(self.db_path)

    @contextlib.contextmanager
    def reader(self):
        try:
            conn = store.open_database(self.db_path, readonly=True, create=False)
        except store.StoreError as exc:
            raise ApiError(503, f"database unavailable: {exc}") from None
        try:
            yield conn
        finally:
            conn.close()


_RUN_COLUMNS = ("id, uuid, host, mask_host, total_users, ramp_up_sec, duration, status, started_at, "
                "completed_at, total_requests, success_count, error_count, avg_latency, rps, method, "
                "url, mode, rate, workers, p50, p99, label, stop_reason, measured_duration, "
                "requests_limit")


def _find_row(conn, run_uuid: str, full: bool = False) -> dict | None:
    if full:
        row = store.find_run(conn, run_uuid)
        return row if row is not None and row["uuid"] == run_uuid else None
    cursor = conn.execute(f"SELECT {_RUN_COLUMNS} FROM test_runs WHERE uuid = ?", (run_uuid,))
    return next(dict_rows(cursor), None)


# A run in one of these states has no final summary to trust (yet): its numbers come from
# its per-second windows.
_FROM_WINDOWS = ("running", "interrupted", "failed")


def _elapsed(row: dict | None, run: RunProcess | None) -> float:
    if row is None:
        if run is None:
            return 0.0
        end = run.ended_mono if run.ended_mono is not None else time.monotonic()
        return max(0.0, end - run.started_mono)
    if row["status"] == "running":
        started = parse_iso_utc(row.get("started_at"))
        return max(0.0, (_now() - started).total_seconds()) if started else 0.0
    if row.get("measured_duration") is not None:
        return float(row["measured_duration"])
    started, ended = parse_iso_utc(row.get("started_at")), parse_iso_utc(row.get("completed_at"))
    return max(0.0, (ended - started).total_seconds()) if started and ended else 0.0


def _live_numbers(row: dict, series: SeriesSnapshot | None, elapsed: float) -> dict:
    """success_rate, rps, avg_ms: stored for finished runs, from the windows otherwise."""
    if row["status"] not in _FROM_WINDOWS or series is None:
        total = row.get("total_requests") or 0
        return {"success_rate": (row.get("success_count") or 0) / total if total else None,
                "rps": row.get("rps"), "avg_ms": row.get("avg_latency"),
                "p99_ms": row.get("p99")}
    totals = series.totals
    if row.get("avg_latency") is not None and row["status"] != "running":
        avg, p99 = row.get("avg_latency"), row.get("p99")
    else:
        avg = totals.latency.mean_us / 1000 if totals.latency.total else None
        p99 = totals.latency.value_at_percentile(99) / 1000 if totals.latency.total else None
    seconds = max(elapsed, float(len(series.rows))) if row["status"] == "running" \
        else (row.get("measured_duration") or float(len(series.rows)) or elapsed)
    responses = totals.counters.responses
    return {"success_rate": totals.counters.successes / totals.requests if totals.requests else None,
            "rps": row["rps"] if row.get("rps") is not None and row["status"] != "running"
            else (responses / seconds if seconds else None),
            "avg_ms": avg, "p99_ms": p99}


def _status_payload(row: dict | None, run: RunProcess | None, series: SeriesSnapshot | None) -> dict:
    elapsed = _elapsed(row, run)
    if row is None:                                  # started here, not stored (yet)
        p = run.params
        status = "running" if run.alive else "failed"
        payload = {
            "uuid": run.uuid, "id": None, "status": status,
            "url": display_url(p.url, p.host, p.mask_host), "label": p.label or None,
            "method": p.method, "users": p.users, "duration": p.duration_s,
            "ramp_up": p.ramp_up_s, "rate": p.rate, "mask_host": p.mask_host,
            "elapsed_s": round(elapsed, 3), "remaining_s": round(max(0.0, p.duration_s - elapsed), 3)
            if status == "running" else 0.0,
            "progress": 0.0, "started_at": run.started_at, "completed_at": None,
            "summary": summary_line(mask_host(p.host) if p.mask_host else p.host, p.users,
                                    p.duration_s, None, None, None, running=status == "running"),
            "stop_reason": None,
        }
        if status == "failed":
            payload["error"] = run.error_line()
        return payload
    masked = bool(row.get("mask_host"))
    host = mask_host(row.get("host")) if masked else row.get("host")
    duration = row.get("duration")
    status = row["status"]
    if status == "running":
        remaining = max(0.0, (duration or 0) - elapsed)
        progress = min(1.0, elapsed / duration) if duration else 0.0
    else:
        remaining = 0.0
        progress = 1.0 if status == "completed" else (min(1.0, elapsed / duration) if duration else 0.0)
    numbers = _live_numbers(row, series, elapsed)
    payload = {
        "uuid": row["uuid"], "id": row["id"], "status": status,
        "url": display_url(row.get("url"), row.get("host"), masked), "label": row.get("label"),
        "method": row.get("method"), "users": row.get("total_users"), "duration": duration,
        "ramp_up": row.get("ramp_up_sec") or None, "rate": row.get("rate"), "mask_host": masked,
        "elapsed_s": round(elapsed, 3), "remaining_s": round(remaining, 3),
        "progress": round(progress, 4), "started_at": row.get("started_at"),
        "completed_at": row.get("completed_at"),
        "summary": summary_line(host, row.get("total_users"), duration, numbers["success_rate"],
                                numbers["rps"], numbers["avg_ms"], running=status == "running"),
        "stop_reason": row.get("stop_reason"),
    }
    if run is not None and run.stop_requested and status == "running":
        payload["stopping"] = True
    return payload


def _report(ctx: ServeContext, conn, row_full: dict, series: SeriesSnapshot) -> dict:
    """history.report_from_row, fed from the windows when the run has no stored summary yet."""
    row = dict(row_full)
    if row["status"] == "running" or (row.get("latency_hist") is None and series.rows):
        totals = series.totals
        row.update(totals.summary_columns())
        if row["status"] == "running":
            row["measured_duration"] = _elapsed(row, None)
        elif not row.get("measured_duration"):
            row["measured_duration"] = float(len(series.rows))
    report = report_from_row(row, ctx.db_path)
    report.pop("db", None)
    if row.get("mask_host"):
        report["url"] = display_url(report.get("url"), row.get("host"), True)
        for target in report.get("targets") or []:
            target["url"] = display_url(target.get("url"), row.get("host"), True)
    return report


# --------------------------------------------------------------------------- endpoints (sync
# ones run in Starlette's thread pool, each with its own read-only connection)

def _client(request) -> str:
    return request.client.host if request.client else "unknown"


def _json(data, status: int = 200, headers: dict | None = None):
    from starlette.responses import Response
    body = json.dumps(_clean(data), separators=(",", ":"), ensure_ascii=False, default=str)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, headers: dict | None = None):
    return _json({"error": message}, status, headers)


def _check_uuid(run_uuid: str) -> str:
    run_uuid = run_uuid.lower()
    if not UUID_RE.match(run_uuid):
        raise ApiError(404, f"no run {run_uuid!r}")
    return run_uuid


def _lookup(ctx: ServeContext, conn, run_uuid: str, full: bool = False):
    row = _find_row(conn, run_uuid, full)
    run = ctx.manager.get(run_uuid)
    if row is None and run is None:
        raise ApiError(404, f"no run {run_uuid}")
    return row, run


def _status_sync(ctx, run_uuid):
    with ctx.reader() as conn:
        row, run = _lookup(ctx, conn, run_uuid)
        series = ctx.cache.get(conn, row) if row is not None and row["status"] in _FROM_WINDOWS \
            else None
        return _status_payload(row, run, series)


def _metrics_sync(ctx, run_uuid):
    with ctx.reader() as conn:
        row, run = _lookup(ctx, conn, run_uuid, full=True)
        if row is None:
            payload = _status_payload(None, run, None)
            return {"uuid": run_uuid, "status": payload["status"], "live": True,
                    "requests": 0, "requests_so_far": 0, "rps_last_second": None,
                    "elapsed_s": payload["elapsed_s"], "seconds_recorded": 0,
                    "error": payload.get("error")}
        series = ctx.cache.get(conn, row)
        report = _report(ctx, conn, row, series)
        rows = series.rows
        report["live"] = row["status"] == "running"
        report["elapsed_s"] = round(_elapsed(row, run), 3)
        report["seconds_recorded"] = len(rows)
        if report["live"]:
            closed = series.closed
            report["requests_so_far"] = series.totals.requests
            report["errors_so_far"] = series.totals.requests - series.totals.counters.successes
            report["rps_last_second"] = closed[-1]["rps"] if closed else None
            report["p99_last_second_ms"] = closed[-1]["p99_ms"] if closed else None
        return report


def _timeseries_sync(ctx, run_uuid):
    with ctx.reader() as conn:
        row, run = _lookup(ctx, conn, run_uuid)
        if row is None:
            return {"uuid": run_uuid, "seconds": []}
        series = ctx.cache.get(conn, row)
        return {"uuid": run_uuid, "status": row["status"], "seconds": series.rows}


_RUNNING_KEYS = ("uuid", "id", "url", "label", "users", "duration", "elapsed_s", "remaining_s",
                 "progress", "status", "started_at")


def _running_sync(ctx):
    with ctx.reader() as conn:
        cursor = conn.execute(f"SELECT {_RUN_COLUMNS} FROM test_runs WHERE status = 'running' "
                              "ORDER BY started_at DESC, id DESC")
        rows = list(dict_rows(cursor))
        stored = {row["uuid"] for row in rows}
        # runs started here that have not stored their row yet (a finished run's process
        # may outlive its row's final status by a moment: those are not running)
        pending = [r for r in ctx.manager.active()
                   if r.uuid not in stored and _find_row(conn, r.uuid) is None]
    payloads = [_status_payload(row, ctx.manager.get(row["uuid"]), None) for row in rows]
    payloads += [_status_payload(None, run, None) for run in pending]
    return [{k: p[k] for k in _RUNNING_KEYS} for p in payloads]


def _history_sync(ctx, page: int, per_page: int):
    with ctx.reader() as conn:
        total = conn.execute("SELECT count(*) FROM test_runs").get
        cursor = conn.execute(f"SELECT {_RUN_COLUMNS} FROM test_runs ORDER BY started_at DESC, "
                              "id DESC LIMIT ? OFFSET ?", (per_page, (page - 1) * per_page))
        runs = []
        for row in list(dict_rows(cursor)):
            series = ctx.cache.get(conn, row) if row["status"] in _FROM_WINDOWS else None
            elapsed = _elapsed(row, None)
            numbers = _live_numbers(row, series, elapsed)
            masked = bool(row.get("mask_host"))
            host = mask_host(row.get("host")) if masked else row.get("host")
            runs.append({
                "uuid": row["uuid"], "id": row["id"], "label": row.get("label"),
                "url": display_url(row.get("url"), row.get("host"), masked),
                "method": row.get("method"), "users": row.get("total_users"),
                "duration": row.get("duration"), "status": row["status"],
                "started_at": row.get("started_at"), "completed_at": row.get("completed_at"),
                "total_requests": row.get("total_requests"),
                "rps": numbers["rps"], "p99_ms": numbers["p99_ms"],
                "success_rate": numbers["success_rate"], "avg_latency_ms": numbers["avg_ms"],
                "summary": summary_line(host, row.get("total_users"), row.get("duration"),
                                        numbers["success_rate"], numbers["rps"],
                                        numbers["avg_ms"], running=row["status"] == "running"),
            })
    return {"runs": runs, "page": page, "per_page": per_page, "total": total}


def _compare_sync(ctx, a: str, b: str):
    from loadtester.analysis import compare
    with ctx.reader() as conn:
        rows = []
        for ref in (a, b):
            row = _find_row(conn, ref, full=True)
            if row is None:
                raise ApiError(404, f"no run {ref}")
            rows.append(row)
        result = compare.compare_runs(conn, rows[0], rows[1])
    for key, row in zip(("a", "b"), rows):
        if row.get("mask_host"):
            result[key]["url"] = display_url(result[key].get("url"), row.get("host"), True)
    return result


def _report_data(ctx, run_uuid):
    with ctx.reader() as conn:
        row, run = _lookup(ctx, conn, run_uuid, full=True)
        if row is None:
            raise ApiError(409, f"run {run_uuid} has not stored anything yet")
        series = ctx.cache.get(conn, row)
        report = _report(ctx, conn, row, series)
        status = _status_payload(row, run, series)
    return {"uuid": row["uuid"], "run_id": row["id"], "label": row.get("label"),
            "url": status["url"], "method": row.get("method"), "status": row["status"],
            "started_at": row.get("started_at"), "completed_at": row.get("completed_at"),
            "users": row.get("total_users"), "duration": row.get("duration"),
            "summary": status["summary"], "report": report, "seconds": series.rows}


def _stream_poll(ctx, run_uuid, since):
    with ctx.reader() as conn:
        row, run = _lookup(ctx, conn, run_uuid)
        if row is None:
            return _status_payload(None, run, None), []
        series = ctx.cache.get(conn, row)
        status = _status_payload(row, run, series)
        rows = series.closed if row["status"] == "running" else series.rows
        return status, [r for r in rows if r["second"] > since]


def _health_sync(ctx):
    conn = store.open_database(ctx.db_path, readonly=True, create=False)
    try:
        conn.execute("SELECT count(*) FROM test_runs").get
    finally:
        conn.close()


# --------------------------------------------------------------------------- the ASGI app

def create_app(ctx: ServeContext):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def in_thread(fn, *args):
        try:
            return await run_in_threadpool(fn, *args)
        except store.StoreError as exc:
            raise ApiError(503, f"database: {exc}") from None

    async def healthz(request: Request):
        try:
            await run_in_threadpool(_health_sync, ctx)
        except Exception as exc:                    # noqa: BLE001 - any failure is "not ok"
            return _json({"status": "error", "db": str(exc) or type(exc).__name__}, 503)
        return _json({"status": "ok", "db": "ok"})

    async def api_start(request: Request):
        client = _client(request)
        if ctx.limiter is not None:
            allowed, wait = ctx.limiter.take(client)
            if not allowed:
                return _error(429, f"too many tests started from {client}: at most "
                              f"{ctx.limiter.burst} in a row, then {_num(ctx.limiter.per_s * 60)} "
                              f"a minute; retry in {wait} s", {"Retry-After": str(wait)})
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(415, "send the test as JSON (Content-Type: application/json)")
        raw = await _read_body(request, MAX_JSON_BYTES)
        try:
            payload = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the request body is not valid JSON")
        params = validate_start(payload)
        _check_caps(client)
        try:
            await asyncio.wait_for(run_in_threadpool(ssrf.check_target, params.url,
                                                     ctx.allow_private), DNS_TIMEOUT_S)
        except ssrf.BlockedTarget as exc:
            _log_event("target_refused", client=client, reason=str(exc))
            return _error(400, str(exc))
        except asyncio.TimeoutError:
            return _error(400, f"resolving {params.host!r} took more than {DNS_TIMEOUT_S:g} s")
        if ctx.manager.shutting_down:
            return _error(503, "the server is shutting down")
        _check_caps(client)                          # again: no await between here and spawn
        try:
            run = ctx.manager.spawn(params, client)  # on the event loop's (long-lived) thread
        except OSError as exc:
            return _error(500, f"cannot start the test: {exc.strerror or exc}")
        _log_event("run_started", uuid=run.uuid, client=client, pid=run.proc.pid,
                   url=display_url(params.url, params.host, params.mask_host),
                   users=params.users, duration=params.duration_s)
        return _json({"uuid": run.uuid, "status": "running"}, 201,
                     {"Location": f"/api/status/{run.uuid}"})

    def _check_caps(client: str) -> None:
        mine = len(ctx.manager.active(client))
        if mine >= ctx.max_per_client:
            raise ApiError(429, f"{client} already has {mine} tests running (at most "
                                f"{ctx.max_per_client} at a time); stop one or wait",
                           {"Retry-After": "5"})
        everyone = len(ctx.manager.active())
        if everyone >= ctx.max_running:
            raise ApiError(429, f"the server is running {everyone} tests, its limit; try again "
                                "later", {"Retry-After": "5"})

    async def api_status(request: Request):
        return _json(await in_thread(_status_sync, ctx, _check_uuid(request.path_params["uuid"])))

    async def api_metrics(request: Request):
        return _json(await in_thread(_metrics_sync, ctx, _check_uuid(request.path_params["uuid"])))

    async def api_timeseries(request: Request):
        return _json(await in_thread(_timeseries_sync, ctx,
                                     _check_uuid(request.path_params["uuid"])))

    async def api_running(request: Request):
        return _json(await in_thread(_running_sync, ctx))

    async def api_stop(request: Request):
        run_uuid = _check_uuid(request.path_params["uuid"])
        status = await in_thread(_status_sync, ctx, run_uuid)
        run = ctx.manager.get(run_uuid)
        if status["status"] != "running":
            return _error(409, f"run {run_uuid} is not running (status {status['status']})")
        if run is None or not run.alive:
            return _error(409, f"run {run_uuid} was not started by this server; stop it where "
                               "it runs")
        ctx.manager.stop(run)
        _log_event("run_stop", uuid=run_uuid, client=_client(request))
        return _json({"uuid": run_uuid, "status": "stopping"}, 202)

    async def api_history(request: Request):
        page = _int_param(request, "page", 1, 1, 1_000_000)
        per_page = _int_param(request, "per_page", 20, 1, 100)
        return _json(await in_thread(_history_sync, ctx, page, per_page))

    async def api_compare(request: Request):
        a, b = request.query_params.get("a"), request.query_params.get("b")
        if not a or not b:
            return _error(400, "give two runs: /api/compare?a=UUID&b=UUID")
        return _json(await in_thread(_compare_sync, ctx, _check_uuid(a), _check_uuid(b)))

    async def api_stream(request: Request):
        run_uuid = _check_uuid(request.path_params["uuid"])
        since = _int_param(request, "since", 0, 0, 10_000_000)
        last_id = request.headers.get("last-event-id", "")
        if last_id.isdigit():
            since = max(since, int(last_id))
        first = await in_thread(_stream_poll, ctx, run_uuid, since)     # 404 before streaming

        async def events():
            nonlocal since
            status, rows = first
            yield "retry: 2000\n\n"
            last_sent = time.monotonic()
            while True:
                for row in rows:
                    data = dict(row, uuid=run_uuid, status=status["status"],
                                elapsed_s=status["elapsed_s"], remaining_s=status["remaining_s"],
                                progress=status["progress"])
                    yield _sse("window", data, event_id=row["second"])
                    since = row["second"]
                    last_sent = time.monotonic()
                if status["status"] != "running":
                    yield _sse("done", status)
                    return
                if time.monotonic() - last_sent > KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
                await asyncio.sleep(POLL_S)
                try:
                    status, rows = await in_thread(_stream_poll, ctx, run_uuid, since)
                except ApiError as exc:
                    yield _sse("error", {"error": exc.message})
                    return

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def api_report_pdf(request: Request):
        run_uuid = _check_uuid(request.path_params["uuid"])
        data = await in_thread(_report_data, ctx, run_uuid)
        pdf = await run_in_threadpool(htmlreport.render_pdf, data)
        return Response(pdf, media_type="application/pdf", headers={
            "Content-Disposition": f"attachment; filename=loadtest-{run_uuid[:8]}.pdf"})

    async def report_html(request: Request):
        run_uuid = _check_uuid(request.path_params["uuid"])
        data = await in_thread(_report_data, ctx, run_uuid)
        page = await run_in_threadpool(htmlreport.render_html, data)
        return HTMLResponse(page, headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                       "img-src data:; frame-ancestors 'none'"})

    def _page(name: str, title: str):
        path = ctx.web_dir / name
        if path.is_file():
            return FileResponse(path, media_type="text/html; charset=utf-8",
                                headers={"Cache-Control": "no-cache"})
        return HTMLResponse(
            f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
            "</head><body><h1>loadtester</h1><p>The web UI is not installed here "
            f"(no {name}). The API is at <a href=/api/history>/api/history</a>.</p></body></html>")

    async def index_page(request: Request):
        return _page("index.html", "loadtester")

    async def test_page(request: Request):
        _check_uuid(request.path_params["uuid"])
        return _page("test.html", "loadtester test")

    async def on_api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.headers)

    async def on_http_error(request: Request, exc: HTTPException):
        messages = {404: "not found", 405: "method not allowed"}
        return _error(exc.status_code, messages.get(exc.status_code, str(exc.detail)),
                      getattr(exc, "headers", None))

    async def on_crash(request: Request, exc: Exception):
        log.error("unhandled error", exc_info=exc)
        return _error(500, "internal server error")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        # Shutdown: the blasts were sent SIGTERM when the signal arrived (see _Server); give
        # them time to store 'stopped' (wait_all asks any still running to stop first).
        await run_in_threadpool(ctx.manager.wait_all, SHUTDOWN_WAIT_S)

    routes = [
        Route("/healthz", healthz),
        Route("/api/start", api_start, methods=["POST"]),
        Route("/api/status/{uuid}", api_status),
        Route("/api/metrics/{uuid}", api_metrics),
        Route("/api/timeseries/{uuid}", api_timeseries),
        Route("/api/running", api_running),
        Route("/api/stop/{uuid}", api_stop, methods=["POST"]),
        Route("/api/history", api_history),
        Route("/api/compare", api_compare),
        Route("/api/stream/{uuid}", api_stream),
        Route("/api/report/{uuid}", api_report_pdf),
        Route("/report/{uuid}", report_html),
        Route("/", index_page),
        Route("/test/{uuid}", test_page),
        Mount("/static", StaticFiles(directory=str(ctx.web_dir), check_dir=False), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ApiError: on_api_error, HTTPException: on_http_error, Exception: on_crash})
    return RequestMiddleware(app, ctx)


def _int_param(request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be from {lo} to {hi}")
    return value


async def _read_body(request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _sse(event: str, data, event_id=None) -> str:
    text = json.dumps(_clean(data), separators=(",", ":"), default=str)
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {text}\n\n"


# --------------------------------------------------------------------------- middleware

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _host_of(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class RequestMiddleware:
    """Request ids, JSON access log, bearer token, Origin and Host checks (pure ASGI, so
    streaming responses pass straight through)."""

    def __init__(self, app, ctx: ServeContext):
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else _uuid.uuid4().hex
        started = time.perf_counter()
        status_box = [0]
        path = scope.get("path", "")

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                extra = [(b"x-request-id", request_id.encode()),
                         (b"x-content-type-options", b"nosniff"),
                         (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"no-referrer")]
                if path.startswith("/api/"):
                    extra.append((b"cache-control", b"no-store"))
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + \
                    [(k, v) for k, v in extra if k not in names]
            await send(message)

        try:
            refusal = self._refuse(scope, headers, path)
            if refusal is not None:
                await refusal(scope, receive, send_wrapped)
            else:
                await self.app(scope, receive, send_wrapped)
        finally:
            client = scope.get("client")
            _log_access(request_id=request_id, method=scope.get("method"), path=path,
                        status=status_box[0] or 500,
                        ms=round((time.perf_counter() - started) * 1000, 2),
                        client=client[0] if client else None)

    def _refuse(self, scope, headers: dict, path: str):
        ctx = self.ctx
        if ctx.loopback_only_hosts:
            host = _host_of(headers.get("host", ""))
            if host and host not in _LOOPBACK_HOSTS:
                return _error(421, "this server only answers to 127.0.0.1 / localhost")
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get("origin")
            if origin is not None:
                parsed = urllib.parse.urlsplit(origin)
                if origin == "null" or parsed.netloc.lower() != headers.get("host", "").lower():
                    return _error(403, "cross-origin request refused")
        if ctx.token and (path.startswith("/api/") or path.startswith("/report/")):
            supplied = None
            auth = headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                supplied = auth[7:].strip()
            elif method == "GET":
                query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
                supplied = (query.get("access_token") or [None])[0]
            if supplied is None or not hmac.compare_digest(supplied.encode(), ctx.token.encode()):
                return _error(401, "missing or wrong bearer token",
                              {"WWW-Authenticate": 'Bearer realm="loadtester"'})
        return None


# --------------------------------------------------------------------------- logging

class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc)
                 .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _log_access(**fields) -> None:
    level = logging.ERROR if fields.get("status", 0) >= 500 else logging.INFO
    log.log(level, "request", extra={"fields": {"event": "request", **fields}})


def _log_event(event: str, **fields) -> None:
    log.info(event, extra={"fields": {"event": event, **{k: v for k, v in fields.items()
                                                          if v is not None}}})


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


# --------------------------------------------------------------------------- running it

def _is_loopback_bind(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def serve_forever(*, host: str, port: int, db_path: pathlib.Path, allow_private: bool,
                  rate_limit: str = "10/min", max_per_client: int = 3, max_running: int = 10,
                  announce=print) -> None:
    import uvicorn

    setup_logging()
    # Open once: creates/migrates the file and marks runs left 'running' by a dead writer
    # (e.g. a server killed with -9) as 'interrupted'.
    store.open_database(db_path).close()
    token = os.environ.get("LOADTESTER_TOKEN") or None
    ctx = ServeContext(db_path=db_path, allow_private=allow_private, token=token,
                       limiter=RateLimiter.parse(rate_limit), max_per_client=max_per_client,
                       max_running=max_running, loopback_only_hosts=_is_loopback_bind(host))
    app = create_app(ctx)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]

    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="on",
                            access_log=False, log_config=None, proxy_headers=False,
                            server_header=False, timeout_graceful_shutdown=int(SHUTDOWN_WAIT_S),
                            timeout_keep_alive=5)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if not self.should_exit:
                ctx.manager.stop_all()               # blasts start stopping at once
            super().handle_exit(sig, frame)

    server = _Server(config)
    announce(f"loadtester serve listening on http://{shown}:{bound[1]}/ (db {db_path}"
             f"{', private targets allowed' if allow_private else ''}"
             f"{', token required' if token else ''})")
    _log_event("serve_started", url=f"http://{shown}:{bound[1]}/", db=str(db_path),
               allow_private=allow_private, token=bool(token))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
