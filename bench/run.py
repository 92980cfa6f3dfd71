#!/usr/bin/env python3
"""Side-by-side benchmark: peer load generators vs loadtester, on pinned cores.

Starts one HTTP target on 127.0.0.1 (nginx, or loadtester's own target) pinned to
one core, then runs every installed generator pinned to another core, with the same
connections and duration, round after round (so peers and loadtester interleave
in time; the pairs judged run back to back, and even rounds run in reverse).  Prints a table
of medians and the ratios we care about, and writes the same data as JSON to bench/results/.

Load only ever goes to 127.0.0.1, to the server this script started; every child
process runs in its own process group and is killed when the harness stops
(normally, on an exception, on Ctrl-C or on SIGTERM).

    .venv/bin/python bench/run.py [--duration 5s] [--connections 50] [--rounds 3]
                                  [--target auto|nginx|loadtester] [--tools wrk,hey,...]
                                  [--pipeline 16] [--json-only]

Exit status: 0 when the harness ran (a goal missed is reported, not an error),
1 when the harness itself failed (no target, nothing to run), 2 for bad usage.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
HOST = "127.0.0.1"
BASELINE = "loadtester (store=none)"
STORED = "loadtester (store=requests)"
PREVIOUS = "loadtester previous build (store=none)"
WRK_PIPELINED = "wrk pipelined"          # wrk -s pipeline.lua (wrk's own way)
PIPELINED = "loadtester pipelined"       # loadtester blast --pipeline N --store none
WRK_HTTPS = "wrk https"                  # the same rows over TLS (nginx only), keep-alive
HTTPS = "loadtester https"               # ... --insecure (the certificate is self-signed)
HEY_HTTPS_CLOSE = "hey https close"      # a new TLS connection per request
HTTPS_CLOSE = "loadtester https close"   # (nginx keepalive_timeout 0)
DEFAULT_PIPELINE = 16                    # the depth of TechEmpower's plaintext test
VARIANTS = "loadtester 100k variants"    # blast --data: 100,000 rows, one URL each
VARIANT_ROWS = 100_000
VARIANT_RSS_GOAL_MB = 64                 # over the single-URL run's max RSS
PAUSE_BETWEEN_RUNS_S = 0.5
GOALS = [  # (label, numerator row, denominator row, goal)
    ("loadtester/wrk", BASELINE, "wrk", 0.90),
    ("loadtester/hey", BASELINE, "hey", 2.0),
    ("store=requests/store=none", STORED, BASELINE, 0.90),
    ("loadtester pipelined/wrk pipelined", PIPELINED, WRK_PIPELINED, 0.90),
    ("loadtester https/wrk https", HTTPS, WRK_HTTPS, 0.90),
    ("loadtester https close/hey https close", HTTPS_CLOSE, HEY_HTTPS_CLOSE, 0.90),
    ("100k variants/single URL", VARIANTS, BASELINE, 0.90),
]
# CPU seconds per request, judged "at most": (label, numerator row, denominator row, goal)
CPU_GOALS = [("CPU per request: loadtester https/wrk https", HTTPS, WRK_HTTPS, 1.20)]
# Judged only with --previous EXE: this build against an earlier one, same command.
PREVIOUS_GOAL = ("this build/previous build", BASELINE, PREVIOUS, 0.97)


class HarnessError(Exception):
    """The harness itself cannot go on (exit 1)."""


class ParseError(ValueError):
    """A generator's output did not contain what we need."""


# ----------------------------------------------------------------------------
# durations

def parse_duration(text: str | float | int) -> float:
    """'5s', '500ms', '1m', '2' (seconds) -> seconds."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*", str(text))
        if not match:
            raise ValueError(f"bad duration {text!r} (use 500ms, 5s, 1m)")
        value = float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600,
                                         None: 1}[match.group(2)]
    if value <= 0:
        raise ValueError(f"duration must be > 0, got {text!r}")
    return value


def duration_arg(seconds: float) -> str:
    """Seconds as wrk/hey/loadtester take it: '5s' or '1500ms'."""
    if abs(seconds - round(seconds)) < 1e-9:
        return f"{int(round(seconds))}s"
    return f"{int(round(seconds * 1000))}ms"


def whole_seconds(seconds: float) -> int:
    """For tools that only take whole seconds (ab -t, h2load -D)."""
    return max(1, int(round(seconds)))


# ----------------------------------------------------------------------------
# output parsers: text -> {"rps", "p99_ms", "requests", "errors"} (None if unknown)

_TIME_UNITS_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0,
                  "m": 60_000.0, "h": 3_600_000.0}


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def parse_wrk(text: str) -> dict:
    """wrk (and wrk2) with --latency."""
    rps = re.search(r"^Requests/sec:\s*([\d.,]+)", text, re.M)
    if not rps:
        raise ParseError("wrk: no 'Requests/sec:' line")
    # wrk: "     99%  814.00us"; wrk2: " 99.000%    1.23ms"
    p99 = re.search(r"^\s*99(?:\.0+)?%\s+([\d.]+)\s*(ns|us|µs|ms|s|m|h)\b", text, re.M)
    total = re.search(r"^\s*(\d+) requests in ", text, re.M)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     text)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return {
        "rps": _num(rps.group(1)),
        "p99_ms": float(p99.group(1)) * _TIME_UNITS_MS[p99.group(2)] if p99 else None,
        "requests": int(total.group(1)) if total else None,
        "errors": errors,
    }


def parse_hey(text: str) -> dict:
    rps = re.search(r"^\s*Requests/sec:\s*([\d.,]+)", text, re.M)
    if not rps:
        raise ParseError("hey: no 'Requests/sec:' line")
    p99 = re.search(r"^\s*99%\s+in\s+([\d.]+)\s*secs", text, re.M)
    requests = errors = 0
    seen_status = False
    status_block = re.search(r"Status code distribution:\n(.*?)(?:\n\s*\n|\Z)", text, re.S)
    if status_block:
        for code, count in re.findall(r"\[(\d+)\]\s+(\d+)\s+responses", status_block.group(1)):
            seen_status = True
            requests += int(count)
            if not 200 <= int(code) < 400:
                errors += int(count)
    error_block = re.search(r"Error distribution:\n(.*?)(?:\n\s*\n|\Z)", text, re.S)
    if error_block:
        errors += sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", error_block.group(1), re.M))
    return {
        "rps": _num(rps.group(1)),
        "p99_ms": float(p99.group(1)) * 1000.0 if p99 else None,
        "requests": requests if seen_status else None,
        "errors": errors,
    }


def parse_ab(text: str) -> dict:
    rps = re.search(r"^Requests per second:\s*([\d.,]+)", text, re.M)
    if not rps:
        raise ParseError("ab: no 'Requests per second:' line")
    p99 = re.search(r"^\s*99%\s+(\d+(?:\.\d+)?)\b", text, re.M)   # milliseconds
    complete = re.search(r"^Complete requests:\s*(\d+)", text, re.M)
    failed = re.search(r"^Failed requests:\s*(\d+)", text, re.M)
    non2xx = re.search(r"^Non-2xx responses:\s*(\d+)", text, re.M)
    return {
        "rps": _num(rps.group(1)),
        "p99_ms": float(p99.group(1)) if p99 else None,
        "requests": int(complete.group(1)) if complete else None,
        "errors": (int(failed.group(1)) if failed else 0)
                  + (int(non2xx.group(1)) if non2xx else 0),
    }


def parse_h2load(text: str) -> dict:
    """h2load prints no percentiles: p99 stays unknown."""
    rps = re.search(r"finished in [\d.]+\w*, ([\d.,]+) req/s", text)
    if not rps:
        raise ParseError("h2load: no 'finished in ..., N req/s' line")
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    # "failed" already covers 4xx/5xx answers, errored and timed-out requests
    return {"rps": _num(rps.group(1)), "p99_ms": None,
            "requests": int(req.group(3)) if req else None,
            "errors": int(req.group(5)) if req else 0}


def _json_object(text: str) -> dict:
    """The JSON object in a tool's stdout (tolerates lines before it)."""
    try:
        return json.loads(text)
    except ValueError:
        start = text.find("{")
        if start < 0:
            raise ParseError("no JSON object in output") from None
        try:
            return json.loads(text[start:])
        except ValueError as exc:
            raise ParseError(f"bad JSON in output: {exc}") from None


def parse_autocannon(text: str) -> dict:
    data = _json_object(text)
    try:
        reqs = data["requests"]
        duration = data.get("duration") or 0
        rps = reqs["total"] / duration if duration and reqs.get("total") else reqs["average"]
    except (KeyError, TypeError) as exc:
        raise ParseError(f"autocannon: missing {exc}") from None
    return {"rps": float(rps), "p99_ms": data.get("latency", {}).get("p99"),
            "requests": reqs.get("total"),
            "errors": (data.get("errors") or 0) + (data.get("timeouts") or 0)
                      + (data.get("non2xx") or 0)}


def parse_loadtester(text: str) -> dict:
    data = _json_object(text)
    if "rps" not in data:
        raise ParseError("loadtester: no 'rps' key in --json output")
    latency = data.get("latency_ms") or {}
    return {"rps": float(data["rps"]), "p99_ms": latency.get("p99"),
            "requests": data.get("requests"), "errors": data.get("errors") or 0,
            "dropped_records": data.get("dropped_records"), "status": data.get("status")}


# ----------------------------------------------------------------------------
# the generators

@dataclass
class Ctx:
    url: str
    connections: int
    duration_s: float
    tmpdir: Path
    wrk2_rate: int
    pipeline: int = DEFAULT_PIPELINE
    https_url: str | None = None         # nginx only: the same response over TLS
    https_close_url: str | None = None   # ... closing the connection after each response


@dataclass
class Tool:
    name: str                       # row name in the table
    key: str                        # name for --tools
    find: Callable[[], list[str] | None]
    argv: Callable[[list[str], Ctx], list[str]]
    parse: Callable[[str], dict]
    db: bool = False                # a loadtester row: clean its database after each run
    needs: str = "url"              # the Ctx URL it loads (None there: the target has none)


def _which(*names: str) -> Callable[[], list[str] | None]:
    def find():
        for name in names:
            path = shutil.which(name)
            if path:
                return [path]
        return None
    return find


def loadtester_command() -> list[str] | None:
    exe = ROOT / ".venv" / "bin" / "loadtester"
    if exe.exists():
        return [str(exe)]
    path = shutil.which("loadtester")
    if path:
        return [path]
    try:
        import importlib.util
        if importlib.util.find_spec("loadtester") is not None:
            return [sys.executable, "-m", "loadtester"]
    except (ImportError, ValueError):
        pass
    return None


def _loadtester_argv(store: str, pipelined: bool = False):
    def argv(cmd: list[str], ctx: Ctx) -> list[str]:
        return [*cmd, "blast", ctx.url, "-c", str(ctx.connections),
                "-d", duration_arg(ctx.duration_s), "--json", "--store", store,
                "--db", str(ctx.tmpdir / "bench.db"), "--no-progress",
                *(["--pipeline", str(ctx.pipeline)] if pipelined else [])]
    return argv


def variants_data_file(ctx: Ctx) -> Path:
    """The data for the VARIANTS row, written once into the run's temp dir."""
    path = ctx.tmpdir / f"variants-{VARIANT_ROWS}.csv"
    if not path.exists():
        path.write_text("id\n" + "".join(f"{i}\n" for i in range(VARIANT_ROWS)))
    return path


def _loadtester_variants_argv(cmd: list[str], ctx: Ctx) -> list[str]:
    """BASELINE's command, each request one of VARIANT_ROWS URLs (?v=0 .. ?v=99999)."""
    argv = _loadtester_argv("none")(cmd, ctx)
    argv[argv.index(ctx.url)] = ctx.url + "?v={{id}}"
    return [*argv, "--data", str(variants_data_file(ctx))]


def rss_verdict(runs: list[Run]) -> dict:
    """The VARIANTS row's max RSS over BASELINE's, median over rounds (paired as the rps)."""
    by_round: dict[int, dict[str, int]] = {}
    for r in runs:
        if r.ok and r.extra.get("max_rss_kb"):
            by_round.setdefault(r.round, {})[r.tool] = r.extra["max_rss_kb"]
    extra_mb = [(rd[VARIANTS] - rd[BASELINE]) / 1024 for rd in by_round.values()
                if VARIANTS in rd and BASELINE in rd]
    value = median(extra_mb) if extra_mb else None
    return {"label": "100k variants RSS - single URL RSS (MB)", "goal_mb": VARIANT_RSS_GOAL_MB,
            "value": value, "met": None if value is None else value <= VARIANT_RSS_GOAL_MB}


# wrk's pipelining is a Lua script (as its scripts/pipeline.lua): `request` returns N
# requests concatenated, which wrk writes at once and counts as N.
WRK_PIPELINE_LUA = """\
-- written by bench/run.py: {depth} requests per write, as wrk's scripts/pipeline.lua
init = function(args)
   local r = {{}}
   for i = 1, {depth} do
      r[i] = wrk.format()
   end
   req = table.concat(r)
end

request = function()
   return req
end
"""


def wrk_pipeline_script(ctx: Ctx) -> Path:
    """The Lua script for wrk at ctx.pipeline, written once into the run's temp dir."""
    path = ctx.tmpdir / f"pipeline-{ctx.pipeline}.lua"
    if not path.exists():
        path.write_text(WRK_PIPELINE_LUA.format(depth=ctx.pipeline))
    return path


def _wrk_pipeline_argv(cmd: list[str], ctx: Ctx) -> list[str]:
    return [*cmd, "-t1", f"-c{ctx.connections}", f"-d{duration_arg(ctx.duration_s)}",
            "--latency", "-s", str(wrk_pipeline_script(ctx)), ctx.url]


def _wrk_argv(cmd: list[str], ctx: Ctx) -> list[str]:
    return [*cmd, "-t1", f"-c{ctx.connections}", f"-d{duration_arg(ctx.duration_s)}",
            "--latency", ctx.url]


def _hey_argv(cmd: list[str], ctx: Ctx) -> list[str]:
    return [*cmd, "-c", str(ctx.connections), "-z", duration_arg(ctx.duration_s), ctx.url]


def _at(url_field: str, argv: Callable[[list[str], Ctx], list[str]],
        *extra: str) -> Callable[[list[str], Ctx], list[str]]:
    """A tool's command line aimed at another of the target's URLs (ctx.https_url, ...)."""
    def aimed(cmd: list[str], ctx: Ctx) -> list[str]:
        return [*argv(cmd, replace(ctx, url=getattr(ctx, url_field))), *extra]
    return aimed


# HTTPS (nginx with a self-signed certificate the harness makes): wrk and hey do not
# verify certificates, loadtester is told not to (--insecure). The close rows make a new
# TLS connection per request (nginx keepalive_timeout 0); loadtester resumes sessions there.
HTTPS_TOOLS: list[Tool] = [
    Tool(WRK_HTTPS, "wrk-https", _which("wrk"), _at("https_url", _wrk_argv), parse_wrk,
         needs="https_url"),
    Tool(HTTPS, "loadtester-https", loadtester_command,
         _at("https_url", _loadtester_argv("none"), "--insecure"), parse_loadtester, db=True,
         needs="https_url"),
    Tool(HEY_HTTPS_CLOSE, "hey-https-close", _which("hey"), _at("https_close_url", _hey_argv),
         parse_hey, needs="https_close_url"),
    Tool(HTTPS_CLOSE, "loadtester-https-close", loadtester_command,
         _at("https_close_url", _loadtester_argv("none"), "--insecure"), parse_loadtester,
         db=True, needs="https_close_url"),
]


# Run order. Paired ratios compare tools within a round, so the pairs we judge
# (loadtester/wrk, store=requests/store=none) run next to each other.
TOOLS: list[Tool] = [
    Tool("wrk", "wrk", _which("wrk"), _wrk_argv, parse_wrk),
    Tool(BASELINE, "loadtester-none", loadtester_command, _loadtester_argv("none"),
         parse_loadtester, db=True),
    Tool(VARIANTS, "loadtester-variants", loadtester_command, _loadtester_variants_argv,
         parse_loadtester, db=True),
    Tool(STORED, "loadtester-requests", loadtester_command, _loadtester_argv("requests"),
         parse_loadtester, db=True),
    Tool(WRK_PIPELINED, "wrk-pipeline", _which("wrk"), _wrk_pipeline_argv, parse_wrk),
    Tool(PIPELINED, "loadtester-pipeline", loadtester_command,
         _loadtester_argv("none", pipelined=True), parse_loadtester, db=True),
    *HTTPS_TOOLS,
    Tool("wrk2", "wrk2", _which("wrk2"),
         lambda cmd, c: [*cmd, "-t1", f"-c{c.connections}", f"-d{duration_arg(c.duration_s)}",
                         f"-R{c.wrk2_rate}", "--latency", c.url],
         parse_wrk),
    Tool("hey", "hey", _which("hey"), _hey_argv, parse_hey),
    Tool("ab", "ab", _which("ab"),
         lambda cmd, c: [*cmd, "-k", "-c", str(c.connections), "-t",
                         str(whole_seconds(c.duration_s)), "-n", "100000000", c.url],
         parse_ab),
    Tool("h2load", "h2load", _which("h2load"),
         lambda cmd, c: [*cmd, "--h1", "-c", str(c.connections), "-D",
                         str(whole_seconds(c.duration_s)), c.url],
         parse_h2load),
    Tool("autocannon", "autocannon", _which("autocannon"),
         lambda cmd, c: [*cmd, "-c", str(c.connections), "-d", str(whole_seconds(c.duration_s)),
                         "-j", c.url],
         parse_autocannon),
]
TOOL_ALIASES = {"loadtester": ["loadtester-none", "loadtester-requests"],
                "lt": ["loadtester-none", "loadtester-requests"],
                "store=none": ["loadtester-none"], "store=requests": ["loadtester-requests"],
                "pipeline": ["wrk-pipeline", "loadtester-pipeline"],
                "https": [t.key for t in HTTPS_TOOLS],
                "variants": ["loadtester-none", "loadtester-variants"]}


def with_previous(tools: list[Tool], exe: str) -> list[Tool]:
    """The tools with a row for another loadtester build, run right after store=none (the
    pair is judged back to back, like loadtester/wrk)."""
    path = shutil.which(exe) or (exe if Path(exe).is_file() else None)
    if path is None:
        raise ValueError(f"--previous {exe!r}: no such executable")
    previous = Tool(PREVIOUS, "loadtester-previous", lambda: [str(Path(path).absolute())],
                    _loadtester_argv("none"), parse_loadtester, db=True)
    out: list[Tool] = []
    for tool in tools:
        out.append(tool)
        if tool.key == "loadtester-none":
            out.append(previous)
    return out if previous in out else [*out, previous]


def select_tools(spec: str | None) -> list[Tool]:
    """--tools 'wrk,hey,loadtester' -> Tool objects in the fixed run order."""
    if not spec:
        return list(TOOLS)
    by_key = {t.key: t for t in TOOLS}
    wanted: set[str] = set()
    for word in (w.strip().lower() for w in spec.split(",")):
        if not word:
            continue
        if word in TOOL_ALIASES:
            wanted.update(TOOL_ALIASES[word])
        elif word in by_key:
            wanted.add(word)
        else:
            names = ", ".join([*by_key, *TOOL_ALIASES])
            raise ValueError(f"unknown tool {word!r} (known: {names})")
    return [t for t in TOOLS if t.key in wanted]


# ----------------------------------------------------------------------------
# processes

def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    if cpu is None or not taskset:
        return argv
    return [taskset, "-c", str(cpu), *argv]


def kill_group(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM the child's process group, SIGKILL what is left after grace_s, reap."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    # the leader may be gone while its children linger: SIGKILL the group either way
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if proc.returncode is None:
        with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
            proc.wait(timeout=grace_s)


def group_cpu_s(pgid: int) -> float | None:
    """utime+stime of the live processes in a process group (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    found = False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                rest = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[2]) == pgid:
            found = True
            total += int(rest[11]) + int(rest[12])
    return total / ticks if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise HarnessError(f"target exited with status {proc.returncode} before listening"
                               f"{': ' + detail if detail else ''}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise HarnessError(f"target did not accept connections on {HOST}:{port} "
                                   f"within {timeout_s:g}s") from None
            time.sleep(0.05)


# ----------------------------------------------------------------------------
# targets

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
{tls_servers}    server {{
        listen {host}:{port};
        default_type text/plain;
        location / {{
            return 200 "Hello, World!";
        }}
    }}
}}
"""


NGINX_TLS_SERVERS = """\
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    server {{
        listen {host}:{https_port} ssl;
        default_type text/plain;
        location / {{
            return 200 "Hello, World!";
        }}
    }}
    server {{
        listen {host}:{https_close_port} ssl;
        keepalive_timeout 0;
        default_type text/plain;
        location / {{
            return 200 "Hello, World!";
        }}
    }}
"""


def self_signed_certificate(directory: Path) -> tuple[Path, Path] | None:
    """An RSA-2048 certificate for 127.0.0.1 made with the openssl CLI (None without it)."""
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    done = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise HarnessError(f"openssl could not make a certificate: {done.stderr.strip()[-300:]}")
    return cert, key


def nginx_tls_servers(conf_dir: Path) -> tuple[str, str | None, str | None]:
    """The nginx server blocks of the HTTPS rows, and their URLs (keep-alive, close)."""
    made = self_signed_certificate(conf_dir)
    if made is None:
        return "", None, None
    https_port, https_close_port = free_port(), free_port()
    text = NGINX_TLS_SERVERS.format(cert=made[0], key=made[1], host=HOST, https_port=https_port,
                                    https_close_port=https_close_port)
    return text, f"https://{HOST}:{https_port}/", f"https://{HOST}:{https_close_port}/"


def find_nginx() -> str | None:
    if os.access("/usr/sbin/nginx", os.X_OK):
        return "/usr/sbin/nginx"
    return shutil.which("nginx")


def _version(argv: list[str]) -> str | None:
    """First line a tool prints about its version (best effort, bounded)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + "\n" + out.stderr).strip()
    return text.splitlines()[0].strip() if text else None


@dataclass
class Target:
    kind: str
    url: str
    proc: subprocess.Popen
    cpu: int | None
    version: str | None = None
    https_url: str | None = None
    https_close_url: str | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float | None:
        return group_cpu_s(self.proc.pid)

    def stop(self) -> None:
        kill_group(self.proc)


def start_target(kind: str, tmp: Path, cpu: int | None, lifetime_s: float,
                 connections: int) -> Target:
    port = free_port()
    log = tmp / "target.log"
    if kind == "nginx":
        nginx = find_nginx()
        if not nginx:
            raise HarnessError("nginx not found (install it: make bench-peers)")
        conf_dir = tmp / "nginx"
        conf_dir.mkdir()
        conf = conf_dir / "nginx.conf"
        tls_servers, https_url, https_close_url = nginx_tls_servers(conf_dir)
        conf.write_text(NGINX_CONF.format(tmp=conf_dir, host=HOST, port=port,
                                          worker_connections=max(1024, 2 * connections + 64),
                                          tls_servers=tls_servers))
        argv = [nginx, "-c", str(conf), "-p", f"{conf_dir}/"]
        help_text = subprocess.run([nginx, "-h"], capture_output=True, text=True,
                                   timeout=5).stderr
        if re.search(r"^\s*-e filename", help_text, re.M):
            argv += ["-e", str(conf_dir / "error.log")]   # never touch /var/log/nginx
        argv = pinned(cpu, argv)
        version = _version([nginx, "-v"])
    else:
        cmd = loadtester_command()
        if not cmd:
            raise HarnessError("loadtester is not installed (run: make build)")
        argv = pinned(cpu, [*cmd, "target", "--port", str(port),
                            "--lifetime", duration_arg(math.ceil(lifetime_s))])
        version = https_url = https_close_url = None
    # belt and braces: even if this harness is SIGKILLed, the target ends by itself
    timeout_bin = shutil.which("timeout")
    if timeout_bin:
        argv = [timeout_bin, "-k", "5", f"{math.ceil(lifetime_s) + 10}s", *argv]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)
    target = Target(kind, f"http://{HOST}:{port}/", proc, cpu, version, https_url,
                    https_close_url)
    try:
        wait_port(port, proc, timeout_s=15.0, log=log)
        with urllib.request.urlopen(target.url, timeout=5) as response:
            response.read()
            if response.status != 200:
                raise HarnessError(f"target answered {response.status}, not 200")
    except BaseException:
        target.stop()
        raise
    return target


# ----------------------------------------------------------------------------
# one generator run

@dataclass
class Run:
    tool: str
    round: int
    ok: bool
    rps: float | None = None
    p99_ms: float | None = None
    requests: int | None = None
    errors: int | None = None
    cpu_s: float | None = None
    wall_s: float | None = None
    target_cpu_s: float | None = None
    exit_code: int | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    def cpu_per_100k(self) -> float | None:
        if self.cpu_s is None or not self.requests:
            return None
        return self.cpu_s * 100_000 / self.requests


def run_limit_s(duration_s: float) -> float:
    """How long one generator run may take: ample for start-up and storing, still bounded."""
    return duration_s * 2 + 30


def run_once(tool: Tool, cmd: list[str], ctx: Ctx, cpu: int | None, target: Target,
             round_no: int) -> Run:
    argv = pinned(cpu, tool.argv(cmd, ctx))
    out_path = ctx.tmpdir / "gen.out"
    err_path = ctx.tmpdir / "gen.err"
    limit_s = run_limit_s(ctx.duration_s)
    target_before = target.cpu_s()
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, cwd=ctx.tmpdir)
    status = rusage = None
    try:
        while True:   # os.wait4 gives the CPU of the child and of what it reaped
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() - started > limit_s:
                break
            time.sleep(0.02)
    finally:
        wall = time.monotonic() - started
        # anything left in its group (or the child itself on timeout) goes now
        kill_group(proc, grace_s=2.0)
    target_after = target.cpu_s()
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    run = Run(tool=tool.name, round=round_no, ok=False, wall_s=round(wall, 3),
              exit_code=proc.returncode)
    if target_before is not None and target_after is not None:
        run.target_cpu_s = round(target_after - target_before, 3)
    if rusage is not None:
        run.cpu_s = round(rusage.ru_utime + rusage.ru_stime, 3)
        run.extra["max_rss_kb"] = rusage.ru_maxrss        # its largest process (KiB)
    if status is None:
        run.error = f"timed out after {limit_s:g}s (killed)"
        return run
    try:
        parsed = tool.parse(stdout)
    except ParseError as exc:
        tail = (stderr.strip() or stdout.strip())[-400:]
        run.error = f"{exc}; exit {proc.returncode}; {tail}"
        return run
    run.rps = parsed.pop("rps")
    run.p99_ms = parsed.pop("p99_ms")
    run.requests = parsed.pop("requests")
    if run.requests is None and run.rps is not None:
        run.requests = int(run.rps * ctx.duration_s)   # estimate, for CPU per 100k
        run.extra["requests_estimated"] = True
    run.errors = parsed.pop("errors")
    run.extra.update({k: v for k, v in parsed.items() if v is not None})
    run.ok = run.rps is not None and run.rps > 0
    if proc.returncode != 0:
        run.extra["exit_code_nonzero"] = proc.returncode
    if not run.ok:
        run.error = f"no throughput (exit {proc.returncode})"
    return run


def clean_db(tmp: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            (tmp / f"bench.db{suffix}").unlink()


# ----------------------------------------------------------------------------
# summary and output

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread_pct(values) -> float | None:
    """(max - min) / median, in percent: how much the runs of one tool disagree."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    return 100 * (max(values) - min(values)) / statistics.median(values)


def summarize(tool_names: list[str], runs: list[Run]) -> list[dict]:
    rows = []
    for name in tool_names:
        mine = [r for r in runs if r.tool == name]
        good = [r for r in mine if r.ok]
        rows.append({
            "tool": name,
            "median_rps": median(r.rps for r in good),
            "median_p99_ms": median(r.p99_ms for r in good),
            "cpu_s_per_100k": median(r.cpu_per_100k() for r in good),
            "median_target_cpu_pct": median(
                100 * r.target_cpu_s / r.wall_s if r.target_cpu_s is not None and r.wall_s
                else None for r in good),
            "rps_spread_pct": spread_pct([r.rps for r in good]),
            "median_generator_cpu_pct": median(
                100 * r.cpu_s / r.wall_s if r.cpu_s is not None and r.wall_s else None
                for r in good),
            "runs_ok": len(good), "runs": len(mine),
            "errors": sum(r.errors or 0 for r in good),
            "dropped_records": sum(r.extra.get("dropped_records") or 0 for r in good),
            "failures": [r.error for r in mine if not r.ok],
        })
    base = next((r["median_rps"] for r in rows if r["tool"] == BASELINE), None)
    for row in rows:
        row["ratio_to_baseline"] = (row["median_rps"] / base
                                    if base and row["median_rps"] is not None else None)
    return rows


def paired_ratio(runs: list[Run], num: str, den: str,
                 metric: Callable[[Run], float | None] = lambda r: r.rps) -> float | None:
    """Median over rounds of (num's rps / den's rps) within the same round. The two ran
    back to back, so a machine that speeds up or slows down between rounds (a shared
    VM does) moves both and cancels out, which a ratio of medians does not. `metric`:
    what is compared (rps; CPU per request for CPU_GOALS)."""
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        value = metric(r) if r.ok else None
        if value:
            by_round.setdefault(r.round, {})[r.tool] = value
    ratios = [rd[num] / rd[den] for rd in by_round.values() if num in rd and den in rd]
    return median(ratios) if ratios else None


def verdicts(rows: list[dict], runs: list[Run] = ()) -> list[dict]:
    """Each goal judged on the paired ratio (see paired_ratio); the ratio of the medians
    is kept beside it."""
    rps = {r["tool"]: r["median_rps"] for r in rows}
    out = []
    goals = GOALS + [PREVIOUS_GOAL] if PREVIOUS in rps else GOALS
    for label, num, den, goal in goals:
        a, b = rps.get(num), rps.get(den)
        of_medians = a / b if a and b else None
        value = paired_ratio(list(runs), num, den) if runs else of_medians
        missing = [n for n, v in ((num, a), (den, b)) if not v]
        out.append({"label": label, "numerator": num, "denominator": den, "goal": goal,
                    "value": value, "ratio_of_medians": of_medians,
                    "met": None if value is None else value >= goal, "missing": missing})
    cpu = {r["tool"]: r.get("cpu_s_per_100k") for r in rows}
    for label, num, den, goal in CPU_GOALS:
        a, b = cpu.get(num), cpu.get(den)
        of_medians = a / b if a and b else None
        value = (paired_ratio(list(runs), num, den, Run.cpu_per_100k) if runs
                 else of_medians)
        missing = [n for n, v in ((num, a), (den, b)) if not v]
        out.append({"label": label, "numerator": num, "denominator": den, "goal": goal,
                    "at_most": True, "value": value, "ratio_of_medians": of_medians,
                    "met": None if value is None else value <= goal, "missing": missing})
    return out


def _fmt(value, spec, none="-"):
    return none if value is None else format(value, spec)


def render(doc: dict) -> str:
    m = doc["meta"]
    lines = [
        f"loadtester bench  {m['date']}",
        f"target: {m['target']} ({m['target_version'] or 'version ?'}) at {m['url']}"
        f" pinned to cpu {m['target_cpu']}; generators pinned to cpu {m['generator_cpu']}",
        f"cores: {m['cores']} ({m['cpu_model'] or '?'}); connections: {m['connections']};"
        f" duration: {m['duration_s']:g}s; rounds: {m['rounds']};"
        f" load avg at start: {m['loadavg_start']}",
    ]
    if m["missing_tools"]:
        lines.append(f"not installed (skipped): {', '.join(m['missing_tools'])}")
    if {WRK_PIPELINED, PIPELINED} & set(m["tools"]):
        lines.append(f"pipelined rows: {m.get('pipeline', DEFAULT_PIPELINE)} requests per write "
                     "on each connection")
    if {WRK_HTTPS, HTTPS, HEY_HTTPS_CLOSE, HTTPS_CLOSE} & set(m["tools"]):
        lines.append("https rows: TLSv1.3, RSA-2048 self-signed (loadtester --insecure); "
                     "'close' rows: a new TLS connection per request (keepalive_timeout 0)")
    lines.append("")
    header = (f"{'tool':<28} {'median rps':>11} {'spread':>7} {'median p99':>11} "
              f"{'rps/lt(none)':>12} {'CPU s/100k req':>14} {'target cpu%':>11} {'runs':>5}")
    lines += [header, "-" * len(header)]
    for r in doc["rows"]:
        lines.append(
            f"{r['tool']:<28} {_fmt(r['median_rps'], ',.0f'):>11} "
            f"{(_fmt(r['rps_spread_pct'], '.0f') + '%') if r['rps_spread_pct'] is not None else '-':>7} "
            f"{(_fmt(r['median_p99_ms'], '.2f') + ' ms') if r['median_p99_ms'] is not None else '-':>11} "
            f"{_fmt(r['ratio_to_baseline'], '.2f'):>12} {_fmt(r['cpu_s_per_100k'], '.3f'):>14} "
            f"{_fmt(r['median_target_cpu_pct'], '.0f'):>11} "
            f"{str(r['runs_ok']) + '/' + str(r['runs']):>5}")
    notes = []
    for r in doc["rows"]:
        if r["errors"]:
            notes.append(f"  {r['tool']}: {r['errors']:,} failed requests/errors in ok runs")
        gen = r.get("median_generator_cpu_pct")
        tgt = r.get("median_target_cpu_pct")
        if gen is not None and gen < 80 and (tgt is None or tgt < 80):
            notes.append(f"  {r['tool']}: neither generator ({gen:.0f}% of a core) nor target "
                         f"({_fmt(tgt, '.0f')}%) was busy: something else held the CPUs "
                         "(or latency bound); treat as noise")
        if r["dropped_records"]:
            notes.append(f"  {r['tool']}: {r['dropped_records']:,} request rows not stored "
                         "(dropped_records)")
        for failure in r["failures"]:
            notes.append(f"  {r['tool']}: run failed: {failure}")
    lines += ["", "spread = (max - min) / median of the runs' rps; target cpu% near 100 means "
              "the server, not the generator, was the limit."]
    if notes:
        lines += ["", "notes:", *notes]
    lines.append("")
    for v in doc["verdicts"]:
        bound = "≤" if v.get("at_most") else "≥"
        if v["value"] is None:
            lines.append(f"{v['label']} = n/a (goal {bound} {v['goal']:.2f}; "
                         f"no result for {', '.join(v['missing'])})")
        else:
            mark = "ok" if v["met"] else "MISSED"
            of_medians = v.get("ratio_of_medians")
            lines.append(f"{v['label']} = {v['value']:.2f} (goal {bound} {v['goal']:.2f})  {mark}"
                         + (f"   [median of per-round ratios; ratio of medians "
                            f"{of_medians:.2f}]" if of_medians is not None else ""))
    rss = doc.get("rss_verdict") or {}
    if rss.get("value") is not None:
        lines.append(f"{rss['label']} = {rss['value']:+.1f} (goal ≤ {rss['goal_mb']})  "
                     + ("ok" if rss["met"] else "MISSED"))
    if doc.get("results_file"):
        lines += ["", f"JSON: {doc['results_file']}"]
    return "\n".join(lines)


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def pick_cpus() -> tuple[int | None, int | None, str | None]:
    """(target cpu, generator cpu, warning) from the CPUs this process may use."""
    if not shutil.which("taskset"):
        return None, None, "taskset not found: nothing is pinned"
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    if len(allowed) < 2:
        return None, None, "fewer than 2 usable cores: nothing is pinned"
    return allowed[0], allowed[1], None


def raise_nofile() -> None:
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 1 << 20), hard))


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ----------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Peers vs loadtester, side by side on pinned cores, against 127.0.0.1.")
    p.add_argument("-d", "--duration", default="5s", help="per run (default 5s)")
    p.add_argument("-c", "--connections", type=int, default=50, help="default 50")
    p.add_argument("--rounds", type=int, default=3, help="each tool runs once per round (3)")
    p.add_argument("--target", choices=["auto", "nginx", "loadtester"], default="auto",
                   help="auto: nginx if installed, else loadtester's own target")
    p.add_argument("--tools", help="comma list of: " + ", ".join(
        [t.key for t in TOOLS] + list(TOOL_ALIASES)) + " (default: all installed)")
    p.add_argument("--pipeline", type=int, default=DEFAULT_PIPELINE,
                   help="depth of the pipelined rows (wrk -s pipeline.lua, loadtester "
                        f"--pipeline; default {DEFAULT_PIPELINE})")
    p.add_argument("--wrk2-rate", type=int, default=1_000_000,
                   help="wrk2 -R (requests/s it aims at; default 1000000 = saturate)")
    p.add_argument("--previous", metavar="EXE",
                   help="another loadtester executable (e.g. an earlier commit's "
                        ".venv/bin/loadtester): run it beside store=none and judge the ratio")
    p.add_argument("--json-only", action="store_true", help="print only the JSON document")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    try:
        args.duration_s = parse_duration(args.duration)
        args.selected = select_tools(args.tools)
        if args.previous:
            args.selected = with_previous(args.selected, args.previous)
    except ValueError as exc:
        p.error(str(exc))
    if args.connections < 1 or args.rounds < 1:
        p.error("--connections and --rounds must be ≥ 1")
    if not 1 <= args.pipeline <= 256:
        p.error("--pipeline must be from 1 to 256")
    return args


def round_order(tools: list, round_no: int) -> list:
    """Odd rounds run the tools in order, even rounds in reverse (A B B A): a machine
    that drifts during a round favours neither tool of an adjacent pair."""
    return list(tools) if round_no % 2 else list(reversed(tools))


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)

    def say(msg):
        print(msg, file=sys.stderr, flush=True)

    available, missing = [], []
    for tool in args.selected:
        cmd = tool.find()
        (available if cmd else missing).append((tool, cmd))
    missing_names = [t.name for t, _ in missing]
    if not available:
        say(f"bench: none of the selected tools is installed ({', '.join(missing_names)}); "
            "see bench/README.md (make bench-peers)")
        return 1

    kind = args.target
    if kind == "auto":
        kind = "nginx" if find_nginx() else "loadtester"
    target_cpu, gen_cpu, pin_warning = pick_cpus()
    if pin_warning:
        say(f"bench: warning: {pin_warning}")
    raise_nofile()

    per_run_bound = run_limit_s(args.duration_s) + 5
    lifetime_s = args.rounds * len(available) * per_run_bound + 60
    started_at = dt.datetime.now(dt.UTC)
    try:
        loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        loadavg = None
    runs: list[Run] = []
    target = None
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="loadtester-bench-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            say(f"bench: starting {kind} target on cpu {target_cpu} ...")
            target = start_target(kind, tmp, target_cpu, lifetime_s, args.connections)
            ctx = Ctx(url=target.url, connections=args.connections, duration_s=args.duration_s,
                      tmpdir=tmp, wrk2_rate=args.wrk2_rate, pipeline=args.pipeline,
                      https_url=target.https_url, https_close_url=target.https_close_url)
            unserved = [t.name for t, _ in available if getattr(ctx, t.needs) is None]
            if unserved:
                say(f"bench: skipped (the {kind} target has no URL for them; HTTPS rows need "
                    f"nginx and openssl): {', '.join(unserved)}")
                available = [(t, c) for t, c in available if t.name not in unserved]
                missing_names += unserved
            for round_no in range(1, args.rounds + 1):
                for tool, cmd in round_order(available, round_no):
                    if not target.alive():
                        raise HarnessError(f"target exited (status {target.proc.returncode}) "
                                           "during the benchmark")
                    say(f"bench: round {round_no}/{args.rounds}: {tool.name} ...")
                    run = run_once(tool, cmd, ctx, gen_cpu, target, round_no)
                    if tool.db:
                        clean_db(tmp)
                    runs.append(run)
                    say(f"bench:   {_fmt(run.rps, ',.0f')} req/s, p99 "
                        f"{_fmt(run.p99_ms, '.2f')} ms, cpu {_fmt(run.cpu_s, '.2f')} s"
                        + (f"  [{run.error[:200]}]" if run.error else ""))
                    time.sleep(PAUSE_BETWEEN_RUNS_S)
        except HarnessError as exc:
            say(f"bench: error: {exc}")
            return 1
        except KeyboardInterrupt:
            interrupted = True
            say("bench: interrupted; stopping what was started")
        finally:
            if target is not None:
                target.stop()
    if interrupted:
        return 130

    names = [t.name for t, _ in available]
    rows = summarize(names, runs)
    doc = {
        "meta": {
            "date": started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "target": kind, "target_version": target.version if target else None,
            "url": target.url if target else None,
            "target_cpu": target_cpu, "generator_cpu": gen_cpu, "pinning_warning": pin_warning,
            "cores": os.cpu_count(), "cpu_model": cpu_model(),
            "platform": platform.platform(), "hostname": platform.node(),
            "connections": args.connections, "duration_s": args.duration_s,
            "rounds": args.rounds, "tools": names, "missing_tools": missing_names,
            "pipeline": args.pipeline,
            "https_url": target.https_url if target else None,
            "https_close_url": target.https_close_url if target else None,
            "loadavg_start": loadavg,
            "order": "each round runs every tool once, in this order; even rounds in reverse",
        },
        "rows": rows,
        "verdicts": verdicts(rows, runs),
        "rss_verdict": rss_verdict(runs),
        "runs": [r.__dict__ for r in runs],
    }
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"bench-{stamp}.json"
        n = 1
        while path.exists():
            n += 1
            path = RESULTS_DIR / f"bench-{stamp}-{n}.json"
        doc["results_file"] = str(path.relative_to(ROOT))
        path.write_text(json.dumps(doc, indent=2) + "\n")
    if args.json_only:
        print(json.dumps(doc, indent=2))
    else:
        print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
