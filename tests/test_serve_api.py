"""`loadtester serve` over real HTTP: a real server subprocess, real blasts against
`loadtester target` on 127.0.0.1, a real SQLite file; no mocks.

Every test talks from its own 127.0.0.x source address, so the per-client rate limit and
the per-client cap of one test never touch another's."""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid as uuid_mod
from pathlib import Path

import pytest

from conftest import ROOT, TargetProcess, cli, wait_for

pytestmark = pytest.mark.timeout(120)


def _serve_command() -> list[str]:
    return [sys.executable, "-m", "loadtester", "serve"]


SERVE = _serve_command()


# --------------------------------------------------------------------------- helpers

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)


class Server:
    """`loadtester serve --port 0` in its own process; stderr (JSON logs) goes to a file."""

    def __init__(self, db, *args, env=None, log_dir=None):
        self.db = Path(db)
        self.log_path = Path(log_dir or self.db.parent) / f"serve-{uuid_mod.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.pop("LOADTESTER_TOKEN", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen([*SERVE, "--port", "0", "--db", str(db), *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     cwd=ROOT, env=full_env)
        line = self.proc.stdout.readline()
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.proc.kill()
            self.log.close()
            raise RuntimeError(f"server did not start: {line!r} {self.log_path.read_text()}")
        self.port = int(match.group(1))

    def call(self, method, path, body=None, *, source="127.0.0.1", headers=None, timeout=15):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                          source_address=(source, 0))
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def start(self, source="127.0.0.1", **body):
        return self.call("POST", "/api/start", body, source=source)

    def status(self, run_uuid, **kw):
        return self.get(f"/api/status/{run_uuid}", **kw).json

    def wait_status(self, run_uuid, wanted, timeout_s=20.0, **kw):
        seen = {}

        def check():
            seen.update(self.status(run_uuid, **kw))
            return seen.get("status") in wanted
        assert wait_for(check, timeout_s, 0.1), f"status stayed {seen.get('status')!r}: {seen}"
        return seen

    def children(self) -> list[int]:
        return child_pids(self.proc.pid)

    def terminate(self, timeout_s=20.0) -> float:
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return time.monotonic() - started

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


def child_pids(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(entry.name))
    return kids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_sse(server, run_uuid, *, source="127.0.0.1", timeout_s=20.0, stop_after=None):
    """[(event, data)] from /api/stream/{uuid} until `done` (or stop_after window events)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout_s,
                                      source_address=(source, 0))
    conn.request("GET", f"/api/stream/{run_uuid}")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("content-type").startswith("text/event-stream")
    events, event, data = [], None, []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            line = resp.readline().decode()
            if not line:
                break
            line = line.rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and event:
                events.append((event, json.loads("\n".join(data))))
                if event == "done":
                    break
                if stop_after and sum(1 for e, _ in events if e == "window") >= stop_after:
                    break
                event, data = None, []
    finally:
        conn.close()
    return events


def db_run_count(db) -> int:
    from loadtester import store
    if not Path(db).exists():
        return 0
    conn = store.open_database(db, readonly=True, create=False)
    try:
        return conn.execute("SELECT count(*) FROM test_runs").get
    finally:
        conn.close()


SUMMARY_RE = re.compile(r"^Tested (\S+) with (\d+) virtual users for (\d+(?:\.\d+)?)s - "
                        r"(\d+\.\d)% success rate, (\d+\.\d\d) RPS, (\d+\.\d\d)ms avg latency$")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def target():
    t = TargetProcess()
    yield t
    t.stop()


@pytest.fixture(scope="module")
def slow_target():
    t = TargetProcess("--delay", "1s")
    yield t
    t.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    s = Server(tmp / "runs.db", "--allow-private")
    yield s
    s.terminate()


@pytest.fixture(scope="module")
def finished(server, target):
    """One 3 s run: started, watched over SSE from the first second to `done`."""
    source = "127.0.0.2"
    resp = server.start(source, url=target.url, users=4, duration=3, label="api-main")
    assert resp.status == 201, resp.body
    body = resp.json
    assert body["status"] == "running" and re.fullmatch(r"[0-9a-f-]{36}", body["uuid"])
    first = server.status(body["uuid"], source=source)
    events = read_sse(server, body["uuid"], source=source, timeout_s=30)
    return {"uuid": body["uuid"], "first_status": first, "events": events, "source": source}


# --------------------------------------------------------------------------- the main flow

def test_start_answers_at_once_then_completes(server, finished):
    assert finished["first_status"]["status"] == "running"
    assert finished["first_status"]["users"] == 4
    st = server.status(finished["uuid"])
    assert st["status"] == "completed"
    assert st["progress"] == 1.0 and st["remaining_s"] == 0
    assert st["url"].startswith("http://127.0.0.1:")
    assert st["label"] == "api-main" and st["duration"] == 3
    assert st["completed_at"] and st["started_at"]
    m = SUMMARY_RE.match(st["summary"])
    assert m, st["summary"]
    assert m.group(1) == "127.0.0.1" and m.group(2) == "4" and m.group(3) == "3"


def test_sse_streams_windows_then_done(finished):
    events = finished["events"]
    windows = [d for e, d in events if e == "window"]
    assert len(windows) >= 2, events
    assert [w["second"] for w in windows] == list(range(1, len(windows) + 1))
    for w in windows:
        assert w["uuid"] == finished["uuid"]
        assert w["rps"] > 0 and 0 <= w["success_rate"] <= 1
        assert w["p50_ms"] <= w["p95_ms"] <= w["p99_ms"]
        assert "elapsed_s" in w and w["status"] in ("running", "completed")
    assert events[-1][0] == "done" and events[-1][1]["status"] == "completed"


def test_metrics_history_timeseries_match_the_database(server, finished, target):
    run_uuid = finished["uuid"]
    shown = cli("show", run_uuid, "--json", "--db", server.db)
    assert shown.returncode == 0, shown.stderr
    db_report = json.loads(shown.stdout)

    metrics = server.get(f"/api/metrics/{run_uuid}").json
    for key in ("uuid", "run_id", "status", "requests", "attempts", "successes", "errors",
                "rps", "bytes", "status_codes", "errors_by_kind", "connections",
                "duration_s", "label"):
        assert metrics[key] == db_report[key], key
    # the web's latency adds p95 (from the stored histogram, as the flat `p95`)
    without_p95 = lambda latency: {k: v for k, v in latency.items() if k != "p95"}   # noqa: E731
    assert without_p95(metrics["latency_ms"]) == without_p95(db_report["latency_ms"])
    assert metrics["latency_ms"]["p95"] == metrics["p95"] > 0
    assert metrics["live"] is False and metrics["requests"] > 0
    assert "db" not in metrics

    hist = server.get("/api/history?page=1&per_page=5").json
    assert hist["page"] == 1 and hist["per_page"] == 5 and hist["total"] >= 1
    entry = next(r for r in hist["runs"] if r["uuid"] == run_uuid)
    assert entry["id"] == db_report["run_id"] and entry["status"] == "completed"
    assert entry["rps"] == pytest.approx(db_report["rps"])
    assert entry["p99_ms"] == pytest.approx(db_report["latency_ms"]["p99"])
    assert entry["avg_latency_ms"] == pytest.approx(db_report["latency_ms"]["avg"])
    assert entry["success_rate"] == pytest.approx(db_report["success_rate"])
    assert entry["users"] == 4 and entry["duration"] == 3 and entry["label"] == "api-main"
    assert entry["summary"] == (
        f"Tested 127.0.0.1 with 4 virtual users for 3s - "
        f"{db_report['success_rate'] * 100:.1f}% success rate, {db_report['rps']:.2f} RPS, "
        f"{db_report['latency_ms']['avg']:.2f}ms avg latency")

    series = server.get(f"/api/timeseries/{run_uuid}").json["seconds"]
    assert len(series) == len(db_report["seconds"]) >= 2
    for mine, theirs in zip(series, db_report["seconds"]):
        assert mine["second"] == theirs["second"] + 1
        assert mine["rps"] == theirs["requests"]            # no transport errors here
        assert mine["p50_ms"] == theirs["p50_ms"] and mine["p99_ms"] == theirs["p99_ms"]
        assert mine["p50_ms"] <= mine["p95_ms"] <= mine["p99_ms"]
    assert sum(s["rps"] for s in series) == db_report["requests"]
    assert target.stats()["served"] >= db_report["requests"]


def test_pdf_report(server, finished, tmp_path):
    resp = server.get(f"/api/report/{finished['uuid']}")
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/pdf"
    assert resp.headers["content-disposition"] == \
        f"attachment; filename=loadtest-{finished['uuid'][:8]}.pdf"
    assert resp.body.startswith(b"%PDF-")
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(resp.body)
    assert shutil.which("pdftoppm"), "pdftoppm missing: install poppler-utils (make system-deps)"
    subprocess.run(["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(pdf),
                    str(tmp_path / "out")], check=True, capture_output=True, timeout=60)
    pngs = list(tmp_path.glob("out*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes().startswith(b"\x89PNG")
    assert pngs[0].stat().st_size > 5000                     # not a blank page


def test_html_report(server, finished):
    resp = server.get(f"/report/{finished['uuid']}")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/html")
    page = resp.body.decode()
    assert page.count("<svg") == 3
    polylines = re.findall(r'<polyline[^>]* points="([^"]+)"', page)
    assert len(polylines) >= 5                               # rps, p50, p95, p99, success
    assert all(len(p.split()) >= 2 for p in polylines)
    assert "<script" not in page
    st = server.status(finished["uuid"])
    assert st["summary"] in page
    assert "default-src 'none'" in resp.headers["content-security-policy"]


def test_compare(server, finished):
    u = finished["uuid"]
    resp = server.get(f"/api/compare?a={u}&b={u}")
    assert resp.status == 200
    body = resp.json
    assert body["a"]["uuid"] == u and body["verdict"] in (
        "regression", "improvement", "no significant change", "inconclusive")
    assert server.get(f"/api/compare?a={u}").status == 400
    assert server.get(f"/api/compare?a={u}&b={uuid_mod.uuid4()}").status == 404


# --------------------------------------------------------------------------- stop

def test_stop_a_running_test(server, target):
    source = "127.0.0.4"
    label = "to-stop <b>&amp; ✓"
    resp = server.start(source, url=target.url, users=2, duration=30, mask_host=True,
                        label=label)
    assert resp.status == 201
    run_uuid = resp.json["uuid"]
    assert wait_for(lambda: server.get(f"/api/timeseries/{run_uuid}").json["seconds"], 10)
    running = server.get("/api/running").json
    assert any(r["uuid"] == run_uuid and r["status"] == "running" for r in running)
    live = server.get(f"/api/metrics/{run_uuid}").json
    assert live["live"] is True and live["requests_so_far"] > 0 and live["rps_last_second"] > 0

    resp = server.call("POST", f"/api/stop/{run_uuid}", source=source)
    assert resp.status == 202 and resp.json == {"uuid": run_uuid, "status": "stopping"}
    st = server.wait_status(run_uuid, {"stopped"}, 15)
    assert st["progress"] < 0.5
    # masked host everywhere the API shows it
    assert st["url"].startswith("http://12*****.1:")
    assert st["summary"].startswith("Tested 12*****.1 with 2 virtual users for 30s - ")
    entry = next(r for r in server.get("/api/history").json["runs"] if r["uuid"] == run_uuid)
    assert entry["status"] == "stopped" and "127.0.0.1" not in json.dumps(entry)
    assert entry["label"] == label
    page = server.get(f"/report/{run_uuid}").body.decode()
    assert "to-stop &lt;b&gt;&amp;amp; ✓" in page and "<b>&amp" not in page   # escaped
    assert "127.0.0.1" not in page and "12*****.1" in page
    pdf = server.get(f"/api/report/{run_uuid}")                # non-Latin-1 label: still a PDF
    assert pdf.status == 200 and pdf.body.startswith(b"%PDF-")

    again = server.call("POST", f"/api/stop/{run_uuid}", source=source)
    assert again.status == 409 and "not running" in again.json["error"]
    assert server.call("POST", f"/api/stop/{uuid_mod.uuid4()}").status == 404
    assert not any(r["uuid"] == run_uuid for r in server.get("/api/running").json)


# --------------------------------------------------------------------------- limits

def test_fourth_concurrent_test_from_one_client_is_refused(server, slow_target):
    source = "127.0.0.7"
    started = []
    try:
        # the first one exercises every option the blast command line gets (a body bigger
        # than one argv string may be goes through a file)
        extras = [{"method": "POST", "body": "x" * 200_000, "headers": {"X-Test": "1"},
                   "auth": {"type": "basic", "username": "u", "password": "p:w"},
                   "rate": 5, "ramp_up": 1, "label": "-looks-like-an-option"}, {}, {}]
        for extra in extras:
            resp = server.start(source, url=slow_target.url, users=1, duration=60, **extra)
            assert resp.status == 201, resp.body
            started.append(resp.json["uuid"])
        fourth = server.start(source, url=slow_target.url, users=1, duration=60)
        assert fourth.status == 429
        assert "3 tests running" in fourth.json["error"]
        # another client is not affected by this one's cap
        other = server.start("127.0.0.8", url=slow_target.url, users=1, duration=60)
        assert other.status == 201
        started.append(other.json["uuid"])
    finally:
        for run_uuid in started:
            server.call("POST", f"/api/stop/{run_uuid}")
    for run_uuid in started:
        server.wait_status(run_uuid, {"stopped"}, 15)
    first = server.status(started[0])
    assert first["method"] == "POST" and first["rate"] == 5 and first["ramp_up"] == 1
    assert first["label"] == "-looks-like-an-option"


def test_global_cap(tmp_path, slow_target):
    server = Server(tmp_path / "cap.db", "--allow-private", "--max-running", "1")
    try:
        first = server.start("127.0.0.12", url=slow_target.url, users=1, duration=60)
        assert first.status == 201
        second = server.start("127.0.0.13", url=slow_target.url, users=1, duration=60)
        assert second.status == 429 and "its limit" in second.json["error"]
        assert server.call("POST", f"/api/stop/{first.json['uuid']}").status == 202
        server.wait_status(first.json["uuid"], {"stopped"}, 15)
        assert wait_for(lambda: server.children() == [], 10)
        third = server.start("127.0.0.13", url=slow_target.url, users=1, duration=60)
        assert third.status == 201
    finally:
        server.terminate()


def test_validation_errors(server, target):
    source = "127.0.0.3"
    before = db_run_count(server.db)
    cases = [
        ({"url": "ftp://127.0.0.1/", "users": 1, "duration": 2}, "scheme must be http or https"),
        ({"url": "javascript:alert(1)", "users": 1, "duration": 2}, "scheme"),
        ({"url": target.url, "users": 0, "duration": 2}, "users must be from 1 to 1000"),
        ({"url": target.url, "users": 1001, "duration": 2}, "users must be from 1 to 1000"),
        ({"url": target.url, "users": 1, "duration": 99999}, "duration must be from 1 to 3600"),
        ({"url": target.url, "users": 1, "duration": "2h"}, "duration must be from 1 to 3600"),
        ({"url": target.url, "users": 1, "duration": 2, "headers": {"X-A": "b\r\nX-Evil: 1"}},
         "control characters (CR, LF, NUL, ...) are not allowed"),
        ({"url": target.url, "users": 1, "duration": 2, "headers": {"Bad Name": "x"}},
         "header 'Bad Name': the name may hold only"),
        ({"url": target.url, "users": 1, "duration": 2, "headers": ["X-A: b"]}, "headers must"),
    ]
    for body, message in cases:
        resp = server.start(source, **body)
        assert resp.status == 400, (body, resp.body)
        assert message in resp.json["error"], (body, resp.json)
    cases2 = [
        ({"url": target.url, "users": 1, "duration": 5, "ramp_up": 6}, "ramp_up"),
        ({"url": target.url, "users": 1, "duration": 5, "rate": 100001}, "rate must be at most"),
        ({"url": target.url, "users": 1, "duration": 5, "body": "x" * ((1 << 20) + 1)},
         "larger than 1048576"),
        ({"url": target.url, "auth": {"type": "digest"}}, "auth must be"),
    ]
    for body, message in cases2:
        resp = server.start("127.0.0.9", **body)
        assert resp.status == 400 and message in resp.json["error"], resp.body
    resp = server.call("POST", "/api/start", b"{not json", source="127.0.0.9")
    assert resp.status == 400 and "not valid JSON" in resp.json["error"]
    resp = server.call("POST", "/api/start", b"{}", source="127.0.0.9",
                       headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    assert db_run_count(server.db) == before


def test_rate_limit_on_starts(server):
    source = "127.0.0.6"
    for _ in range(10):
        assert server.start(source, url="http://127.0.0.1:9/", users=0).status == 400
    resp = server.start(source, url="http://127.0.0.1:9/", users=0)
    assert resp.status == 429
    assert int(resp.headers["retry-after"]) >= 1
    assert "too many tests started" in resp.json["error"]
    assert server.start("127.0.0.10", url="http://127.0.0.1:9/", users=0).status == 400


# --------------------------------------------------------------------------- plumbing

def test_request_ids_and_json_logs(server):
    resp = server.get("/healthz", headers={"X-Request-ID": "trace-abc-123"})
    assert resp.status == 200 and resp.json == {"status": "ok", "db": "ok"}
    assert resp.headers["x-request-id"] == "trace-abc-123"
    generated = server.get("/api/history").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    bad = server.get("/healthz", headers={"X-Request-ID": "no spaces\tallowed"})
    assert bad.headers["x-request-id"] != "no spaces\tallowed"

    def logged():
        return any(e.get("request_id") == "trace-abc-123" for e in server.log_lines())
    assert wait_for(logged, 5)
    entry = next(e for e in server.log_lines() if e.get("request_id") == "trace-abc-123")
    assert entry["method"] == "GET" and entry["path"] == "/healthz" and entry["status"] == 200
    assert isinstance(entry["ms"], (int, float)) and entry["level"] == "info" and entry["ts"]


def test_unknown_runs_and_pages(server):
    missing = str(uuid_mod.uuid4())
    for path in (f"/api/status/{missing}", f"/api/metrics/{missing}",
                 f"/api/timeseries/{missing}", f"/api/stream/{missing}",
                 f"/api/report/{missing}", f"/report/{missing}", "/api/status/not-a-uuid",
                 "/api/nothing"):
        resp = server.get(path)
        assert resp.status == 404, path
        assert "error" in resp.json
    index = server.get("/")
    assert index.status == 200 and index.headers["content-type"].startswith("text/html")
    page = server.get(f"/test/{missing}")                  # a plain page, not the app's
    assert page.status == 404 and page.headers["content-type"].startswith("text/html")
    assert server.get("/static/does-not-exist.js").status == 404
    # cross-site POSTs and foreign Host headers are refused
    resp = server.call("POST", "/api/start", {"url": "http://127.0.0.1:9/"},
                       headers={"Origin": "http://evil.example"}, source="127.0.0.11")
    assert resp.status == 403
    assert server.get("/healthz", headers={"Host": "evil.example"}).status == 421


# --------------------------------------------------------------------------- SSRF

def test_ssrf_blocked_without_allow_private(tmp_path, start_target):
    local = start_target()
    db = tmp_path / "ssrf.db"
    server = Server(db)                                   # no --allow-private
    try:
        urls = [
            local.url,                                     # 127.0.0.1, a live target
            "http://10.0.0.1/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            f"http://[::1]:{local.port}/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://100.100.100.200/latest/meta-data/",
        ]
        for url in urls:
            resp = server.start("127.0.0.5", url=url, users=1, duration=2)
            assert resp.status == 400, (url, resp.body)
            assert "refused" in resp.json["error"], (url, resp.json)
            assert server.children() == [], url            # no blast process spawned
        assert server.get("/api/history").json["total"] == 0
        assert server.get("/api/running").json == []
        assert db_run_count(db) == 0
        time.sleep(0.2)
        assert local.stats()["served"] == 0                # the target never saw a request
    finally:
        server.terminate()


# --------------------------------------------------------------------------- token

def test_bearer_token(tmp_path):
    server = Server(tmp_path / "token.db", "--allow-private", env={"LOADTESTER_TOKEN": "s3cret-token"})
    try:
        resp = server.get("/api/history")
        assert resp.status == 401 and "token" in resp.json["error"]
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert server.get("/api/history", headers={"Authorization": "Bearer wrong"}).status == 401
        ok = server.get("/api/history", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status == 200 and ok.json["total"] == 0
        assert server.get("/api/history?access_token=s3cret-token").status == 200
        assert server.call("POST", "/api/start", {"url": "http://127.0.0.1:9/"}).status == 401
        assert server.get(f"/report/{uuid_mod.uuid4()}").status == 401
        assert server.get("/healthz").status == 200          # stays open
    finally:
        server.terminate()


# --------------------------------------------------------------------------- restarts

def test_restart_kill9_and_graceful_shutdown(tmp_path, start_target):
    db = tmp_path / "restart.db"
    target = start_target()
    killed_target = start_target()

    server = Server(db, "--allow-private")
    try:
        done_uuid = server.start(url=target.url, users=2, duration=2).json["uuid"]
        server.wait_status(done_uuid, {"completed"}, 20)
        live_uuid = server.start(url=killed_target.url, users=2, duration=60).json["uuid"]
        assert wait_for(lambda: server.get(f"/api/timeseries/{live_uuid}").json["seconds"], 10)
        blasts = server.children()
        assert len(blasts) == 1
    finally:
        server.kill9()
    # the blast (and its workers) die with the server: the target stops being hit
    assert wait_for(lambda: not alive(blasts[0]), 5), "blast survived kill -9 of the server"
    time.sleep(0.3)
    served = killed_target.stats()["served"]
    assert served > 0
    time.sleep(1.0)
    assert killed_target.stats()["served"] == served

    server = Server(db, "--allow-private")
    try:
        st = server.status(live_uuid)
        assert st["status"] == "interrupted"
        assert server.status(done_uuid)["status"] == "completed"
        runs = {r["uuid"]: r for r in server.get("/api/history").json["runs"]}
        assert runs[done_uuid]["status"] == "completed" and runs[live_uuid]["status"] == "interrupted"
        assert runs[live_uuid]["rps"] and runs[live_uuid]["rps"] > 0   # from its stored windows
        metrics = server.get(f"/api/metrics/{live_uuid}").json
        assert metrics["status"] == "interrupted" and metrics["requests"] > 0

        # graceful: SIGTERM stops the running blast, which stores 'stopped'
        last_uuid = server.start(url=target.url, users=2, duration=60).json["uuid"]
        assert wait_for(lambda: server.get(f"/api/timeseries/{last_uuid}").json["seconds"], 10)
        blast = server.children()[0]
    finally:
        took = server.terminate()
    assert took < 12, f"shutdown took {took:.1f}s"
    assert not alive(blast)
    shown = cli("show", last_uuid, "--json", "--no-windows", "--db", db)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "stopped"
