"""Security and operations of the web app (issue 13): secrets never on a command line, masked
URLs, trusted proxies, a warning when exposed without a token, one name checked and connected.

Real servers on 127.0.0.1 (`loadtester serve`, a header-recording RawServer, `loadtester
target`), real blasts and real SQLite files; the tests named test_real_* are the slow ones."""
from __future__ import annotations

import contextlib
import logging
import os
import re

import pytest
from starlette.testclient import TestClient

from conftest import children_of, cli, free_port, is_alive, wait_for
from loadtester.reports.display import mask_host
from loadtester.headers import parse_header, read_headers_file
from loadtester.model import SpecError
from loadtester.spec import build_spec
from loadtester.web import ssrf
from loadtester.web.app import create_app
from loadtester.web.context import ServeContext
from loadtester.web.errors import ApiError
from loadtester.web.middleware.proxies import parse_trusted_proxies
from loadtester.web.ratelimit import RateLimiter
from loadtester.web.runs import RunManager, memory_file
from loadtester.web.validation import validate_start

SECRETS = ("key-s3cret", "jwt-s3cret", "basic-s3cret")


# --------------------------------------------------------------------------- --headers-file

def test_headers_file_is_parsed_as_dash_h(tmp_path):
    path = tmp_path / "headers"
    path.write_bytes("Authorization: Bearer abc\r\n\nX-Api-Key:  k 1 \nX-Name: café\n".encode())
    assert read_headers_file(str(path)) == [("Authorization", "Bearer abc"),
                                            ("X-Api-Key", "k 1"), ("X-Name", "café")]
    spec = build_spec("http://127.0.0.1:9/", headers=["X-First: 1"], headers_file=str(path))
    assert spec.headers[0] == ("X-First", "1") and spec.headers[1:] == tuple(
        read_headers_file(str(path)))


# The line itself is never shown: the file is there to keep tokens off screens and CI logs.
@pytest.mark.parametrize(("content", "message"), [
    (b"X-Ok: 1\nAuthorization Bearer s3cret\n",
     "{path}:2: invalid header (its value not shown): use 'Name: value'"),
    (b"Bad Name: s3cret\n", "{path}:1: invalid header (its value not shown): the name may hold "
                            "only letters, digits and !#$%&'*+.^_`|~-"),
    (b"Authorization: s3cret\x00b\n", "{path}:1: invalid header 'Authorization' (its value not "
                                     "shown): control characters (CR, LF, NUL, ...) are not "
                                     "allowed in a value"),
    (b"X-A: \xff\n", "cannot read headers file '{path}': 'utf-8' codec can't decode byte 0xff "
                     "in position 5: invalid start byte"),
])
def test_bad_headers_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "headers"
    path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        read_headers_file(str(path))
    assert str(info.value) == message.format(path=path)
    assert "s3cret" not in str(info.value)


def test_missing_headers_file_is_a_usage_error(tmp_path):
    result = cli("blast", "http://127.0.0.1:9/", "--headers-file", tmp_path / "nope", "-n", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == \
        f"loadtester: error: cannot read headers file '{tmp_path / 'nope'}': No such file or directory"


def test_real_blast_sends_the_headers_of_the_file(recording_server, tmp_path):
    server, heads = recording_server()
    path = tmp_path / "headers"
    path.write_text("Authorization: Bearer file-s3cret\nX-Api-Key: k\n")
    result = cli("blast", server.url, "-n", "3", "-c", "1", "--headers-file", path, "-H",
                 "X-Cli: 1", "--db", tmp_path / "runs.db", "--json")
    assert result.returncode == 0, result.stderr
    assert len(set(heads)) == 1                          # every request the same
    lines = heads[0].decode().split("\r\n")
    assert lines[-3:] == ["X-Cli: 1", "Authorization: Bearer file-s3cret", "X-Api-Key: k"]


# --------------------------------------------------------------------------- the web's blasts

def memory_files_of(pid: int | str = "self") -> list[str]:
    """The memfd files process `pid` holds open ('/memfd:loadtester-headers (deleted)', ...)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("/memfd:"):
                found.append(link)
    return found


def test_secrets_go_to_a_file_not_the_command_line(tmp_path):
    manager = RunManager(tmp_path / "runs.db")
    params = validate_start({"url": "http://127.0.0.1:9/", "users": 1, "duration": 1,
                             "headers": {"X-Api-Key": "key-s3cret"}, "body": "b",
                             "auth": {"type": "jwt", "token": "jwt-s3cret"}})
    argv = manager.command("00000000-0000-4000-8000-000000000001", params,
                           headers_file="/dev/fd/7", body_file="/dev/fd/8")
    assert "--headers-file=/dev/fd/7" in argv and "--body-file=/dev/fd/8" in argv
    assert not any(secret in arg for arg in argv for secret in SECRETS)
    assert not any(arg.startswith(("-H", "--header=")) for arg in argv)


def test_memory_files_hold_the_data_and_are_closed_when_the_start_fails(tmp_path):
    fd = memory_file("loadtester-test", b"X-A: 1\n" * 100_000)      # past a pipe's buffer
    try:
        with open(f"/dev/fd/{fd}", "rb") as handle:
            assert handle.read() == b"X-A: 1\n" * 100_000
    finally:
        os.close(fd)
    manager = RunManager(tmp_path / "runs.db")
    manager.python = str(tmp_path / "no-such-python")
    params = validate_start({"url": "http://127.0.0.1:9/", "users": 1, "duration": 1,
                             "body": "b", "auth": {"type": "jwt", "token": "jwt-s3cret"}})
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        manager.spawn(params, "127.0.0.1")
    assert manager.runs == {} and memory_files_of() == []
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_real_memory_files_are_the_blasts_alone(tmp_path):
    db_dir = tmp_path / "a-directory"
    db_dir.mkdir()
    manager = RunManager(db_dir)                      # the blast cannot open its database
    params = validate_start({"url": "http://127.0.0.1:9/", "users": 1, "duration": 1,
                             "body": "b", "auth": {"type": "basic", "username": "u",
                                                   "password": "basic-s3cret"}})
    run = manager.spawn(params, "127.0.0.1")
    assert memory_files_of() == []                    # the server kept no copy
    assert run.done.wait(60), "the blast did not end"
    assert run.returncode not in (0, None)
    manager.wait_all(1)


@pytest.mark.timeout(120)
def test_real_web_run_keeps_secrets_off_the_command_line(recording_server, tmp_path):
    from test_serve_api import Server
    target, heads = recording_server()
    server = Server(tmp_path / "runs.db", "--allow-private")
    try:
        bodies = [{"headers": {"X-Api-Key": "key-s3cret"}, "method": "POST", "body": "b" * 70_000,
                   "auth": {"type": "jwt", "token": "jwt-s3cret"}},
                  {"auth": {"type": "basic", "username": "u", "password": "basic-s3cret"}}]
        for body in bodies:
            heads.clear()
            started = server.start(url=target.url, users=1, duration=3, **body)
            assert started.status == 201, started.body
            run_uuid = started.json["uuid"]
            assert wait_for(lambda u=run_uuid: server.get(f"/api/timeseries/{u}").json["seconds"], 15)
            blasts = server.children()
            assert len(blasts) == 1
            processes = [blasts[0], *children_of(blasts[0])]      # the blast and its worker
            assert len(processes) >= 2
            command_lines = [open(f"/proc/{pid}/cmdline", "rb").read() for pid in processes]
            assert all(b"blast" in line for line in command_lines)
            for line in command_lines:
                assert not any(secret.encode() in line for secret in SECRETS), line
            arguments = command_lines[0].split(b"\0")
            headers_file = next(a for a in arguments if a.startswith(b"--headers-file="))
            fd = headers_file.removeprefix(b"--headers-file=/dev/fd/").decode()
            # an anonymous file in memory that only the blast holds: nothing on disk
            assert os.readlink(f"/proc/{blasts[0]}/fd/{fd}").startswith("/memfd:loadtester-headers")
            assert memory_files_of(server.proc.pid) == []
            server.wait_status(run_uuid, {"completed"}, 30)
            assert wait_for(lambda ps=processes: not any(is_alive(pid) for pid in ps), 5)
            assert len(set(heads)) == 1                      # every request the same
            sent = heads[0].decode()
            if "headers" in body:
                assert "\r\nX-Api-Key: key-s3cret\r\nAuthorization: Bearer jwt-s3cret" in sent
                assert sent.startswith("POST / ") and "\r\nContent-Length: 70000" in sent
            else:
                assert "\r\nAuthorization: Basic dTpiYXNpYy1zM2NyZXQ=" in sent
            # nor does any page or payload show them
            for path in (f"/api/status/{run_uuid}", f"/api/metrics/{run_uuid}", "/api/history",
                         f"/api/historical-metrics/{run_uuid}", f"/report/{run_uuid}",
                         "/metrics"):
                shown = server.get(path).body
                assert not any(s.encode() in shown for s in (*SECRETS, "dTpiYXNpYy1zM2NyZXQ")), path
    finally:
        server.terminate()


# --------------------------------------------------------------------------- mask_host

@pytest.mark.timeout(120)
def test_real_masked_run_hides_host_path_and_query_everywhere(start_target, tmp_path):
    from test_serve_api import Server, read_sse
    target = start_target()
    hidden = ("127.0.0.1", "secret-path", "query-s3cret", "api_key")
    server = Server(tmp_path / "runs.db", "--allow-private")
    try:
        url = f"{target.url}v1/secret-path?api_key=query-s3cret"
        started = server.start(url=url, users=1, duration=2, mask_host=True, label="masked")
        assert started.status == 201, started.body
        run_uuid = started.json["uuid"]
        assert wait_for(lambda: server.get(f"/api/timeseries/{run_uuid}").json["seconds"], 15)
        shown = [server.get("/api/running").body, server.get("/metrics").body,
                 server.get(f"/api/status/{run_uuid}").body,
                 server.get(f"/api/metrics/{run_uuid}").body]
        events = read_sse(server, run_uuid, timeout_s=30)
        assert events[-1][0] == "done" and events[-1][1]["status"] == "completed"
        shown.append(repr(events).encode())
        for path in (f"/api/status/{run_uuid}", f"/api/metrics/{run_uuid}", "/api/history",
                     f"/api/historical-metrics/{run_uuid}", f"/api/timeseries/{run_uuid}",
                     f"/api/timeseries/{run_uuid}?format=pipeops",
                     f"/api/compare?a={run_uuid}&b={run_uuid}", f"/report/{run_uuid}",
                     "/metrics"):
            response = server.get(path)
            assert response.status == 200, (path, response.body)
            shown.append(response.body)
        status = server.status(run_uuid)
        assert status["url"] == f"http://12*****.1:{target.port}/***?***"
        assert status["summary"].startswith("Tested 12*****.1 with 1 virtual users")
        assert server.get(f"/api/historical-metrics/{run_uuid}").json["host"] == "12*****.1"
        assert f'url="http://12*****.1:{target.port}/***?***"' in server.get("/metrics").body.decode()
    finally:
        server.terminate()
    for body in shown:
        for word in hidden:
            assert word.encode() not in body, (word, body[:2000])
    logs = server.log_path.read_bytes()          # (they name the clients: 127.0.0.1 is there)
    assert b"12*****.1" in logs and b"secret-path" not in logs and b"s3cret" not in logs


@pytest.mark.timeout(120)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_real_masked_run_hides_the_host_in_its_error_messages(tmp_path, host):
    # A dead port: every message names where it could not connect ('connection refused
    # 127.0.0.1:PORT', the address a name was checked and pinned to); a masked run shows
    # those masked, as its URL.
    from test_serve_api import Server
    port = free_port()
    address = ssrf.check_target(f"http://{host}:{port}/", True)[0]
    server = Server(tmp_path / "runs.db", "--allow-private")
    try:
        started = server.start(url=f"http://{host}:{port}/", users=1, duration=1,
                               mask_host=True)
        assert started.status == 201, started.body
        run_uuid = started.json["uuid"]
        assert wait_for(lambda: server.status(run_uuid)["status"] != "running", 30)
        status = server.status(run_uuid)
        assert status["result"] == "failed"
        assert status["error_messages"] == {
            "connect": f"connection refused {mask_host(address)}:{port}"}
        assert mask_host(address) in status["result_reason"]
        shown = [server.get(path).body for path in (
            f"/api/status/{run_uuid}", f"/api/metrics/{run_uuid}", "/api/history",
            f"/api/historical-metrics/{run_uuid}", f"/report/{run_uuid}", "/metrics",
            f"/api/compare?a={run_uuid}&b={run_uuid}")]
    finally:
        server.terminate()
    for body in shown:
        assert address.encode() not in body and host.encode() not in body, body[:2000]


# --------------------------------------------------------------------------- trusted proxies

@pytest.mark.parametrize(("text", "trusted"), [
    ("127.0.0.1", ["127.0.0.1"]), (" 10.0.0.1/8 , ::1", ["10.0.0.0/8", "::1"]),
    ("10.0.0.1,*", ["*"]), ("", []), (" , ", []),
])
def test_trusted_proxies_parse(text, trusted):
    assert parse_trusted_proxies(text) == trusted


@pytest.mark.parametrize("text", ["localhost", "10.0.0.0/33", "1.2.3", "127.0.0.1;10.0.0.1"])
def test_trusted_proxies_bad_text(text):
    with pytest.raises(ValueError) as info:
        parse_trusted_proxies(text)
    item = text.split(",")[0].strip()
    assert str(info.value) == (f"invalid trusted proxy {item!r}: give IP addresses or networks "
                               "(127.0.0.1,10.0.0.0/8), * for any, or '' for none")


def test_bad_forwarded_allow_ips_is_a_usage_error():
    result = cli("serve", "--forwarded-allow-ips", "gateway", "--port", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "loadtester: error: Invalid value for '--forwarded-allow-ips': invalid trusted proxy "
        "'gateway': give IP addresses or networks (127.0.0.1,10.0.0.0/8), * for any, or '' "
        "for none")


def start_from(client, forwarded_for=None):
    """POST /api/start with a body that passes the limiter and fails validation (400)."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return client.post("/api/start", json={"users": 0}, headers=headers)


@pytest.fixture
def client_from(db_path):
    """client_from(peer, **ServeContext fields): a TestClient whose requests come from `peer`."""
    opened = []

    def make(peer, **fields):
        ctx = ServeContext(db_path=db_path, limiter=RateLimiter.parse("1/min"), **fields)
        client = TestClient(create_app(ctx), client=(peer, 40000))
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def test_forwarded_for_counts_from_a_trusted_proxy_only(client_from, caplog):
    caplog.set_level(logging.INFO, logger="loadtester.serve")
    proxy = client_from("127.0.0.1")                      # trusted by default
    assert start_from(proxy, "203.0.113.7").status_code == 400
    refused = start_from(proxy, "203.0.113.7")
    assert refused.status_code == 429 and "from 203.0.113.7:" in refused.json()["error"]
    assert start_from(proxy, "203.0.113.8").status_code == 400      # another client behind it
    # a chain: the client is the last address not itself a trusted proxy
    assert start_from(proxy, "198.51.100.1, 203.0.113.9, 127.0.0.1").status_code == 400
    assert start_from(proxy, "198.51.100.2, 203.0.113.9").status_code == 429

    stranger = client_from("192.0.2.50")                  # not a trusted proxy: XFF ignored
    assert start_from(stranger, "203.0.113.77").status_code == 400
    refused = start_from(stranger, "203.0.113.78")
    assert refused.status_code == 429 and "from 192.0.2.50:" in refused.json()["error"]
    clients = [r.fields["client"] for r in caplog.records if r.msg == "request"]
    assert clients == ["203.0.113.7"] * 2 + ["203.0.113.8"] + ["203.0.113.9"] * 2 + \
        ["192.0.2.50"] * 2


def test_forwarded_allow_ips_networks_star_and_none(client_from):
    behind = client_from("10.1.2.3", trusted_proxies=parse_trusted_proxies("10.0.0.0/8"))
    assert start_from(behind, "203.0.113.1").status_code == 400
    assert start_from(behind, "203.0.113.2").status_code == 400
    anyone = client_from("192.0.2.1", trusted_proxies=["*"])
    assert start_from(anyone, "203.0.113.1").status_code == 400
    assert start_from(anyone, "203.0.113.2").status_code == 400
    nobody = client_from("127.0.0.1", trusted_proxies=[])
    assert start_from(nobody, "203.0.113.1").status_code == 400
    assert start_from(nobody, "203.0.113.2").status_code == 429


@pytest.mark.timeout(60)
def test_real_server_trusts_forwarded_for_from_its_proxies_only(tmp_path):
    from test_serve_api import Server
    server = Server(tmp_path / "runs.db", "--rate-limit", "1/min",
                    "--forwarded-allow-ips", "127.0.0.1,127.0.0.8/30")
    try:
        def start(source, forwarded_for):
            return server.call("POST", "/api/start", {"users": 0}, source=source,
                               headers={"X-Forwarded-For": forwarded_for})

        for proxy in ("127.0.0.1", "127.0.0.9"):
            assert start(proxy, f"203.0.113.{proxy[-1]}").status == 400
            refused = start(proxy, f"203.0.113.{proxy[-1]}")
            assert refused.status == 429, refused.body
            assert f"from 203.0.113.{proxy[-1]}:" in refused.json["error"]
        assert start("127.0.0.20", "203.0.113.20").status == 400            # untrusted peer
        refused = start("127.0.0.20", "203.0.113.21")
        assert refused.status == 429 and "from 127.0.0.20:" in refused.json["error"]
    finally:
        server.terminate()
    logged = {line.get("client") for line in server.log_lines() if line.get("event") == "request"}
    assert logged == {"203.0.113.1", "203.0.113.9", "127.0.0.20"}


# --------------------------------------------------------------------------- exposed, no token

def serve_briefly(tmp_path, *args, env=None):
    """`loadtester serve --port 0 ARGS`: (its stderr once it answered /healthz on 127.0.0.1)."""
    import subprocess
    import sys
    import urllib.request

    full_env = {k: v for k, v in os.environ.items() if k != "LOADTESTER_TOKEN"}
    full_env.update(env or {})
    errors = open(tmp_path / "serve.err", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "loadtester", "serve", "--port", "0", "--db",
                             str(tmp_path / "runs.db"), *args], stdout=subprocess.PIPE,
                            stderr=errors, text=True, env=full_env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"listening on http://([\d.]+):(\d+)/", line)
        assert match, line
        address = "127.0.0.1" if match.group(1) == "0.0.0.0" else match.group(1)
        assert address.startswith("127.")                     # requests go to loopback only
        with urllib.request.urlopen(f"http://{address}:{match.group(2)}/healthz",
                                    timeout=10) as answer:
            assert answer.status == 200
    finally:
        proc.terminate()
        proc.wait(20)
        proc.stdout.close()
    errors.seek(0)
    return line, errors.read()


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("loadtester: warning:")]


@pytest.mark.timeout(60)
def test_real_serve_warns_when_exposed_without_a_token(tmp_path):
    line, stderr = serve_briefly(tmp_path, "--host", "0.0.0.0")
    assert line.startswith("loadtester serve listening on http://0.0.0.0:")
    assert warnings_in(stderr) == [
        "loadtester: warning: listening on 0.0.0.0, not only on loopback, without "
        "LOADTESTER_TOKEN: anyone who can reach this port can start load tests from this "
        "machine; set LOADTESTER_TOKEN"]
    _line, stderr = serve_briefly(tmp_path, "--host", "0.0.0.0",
                                  env={"LOADTESTER_TOKEN": "t0ken"})
    assert warnings_in(stderr) == []
    for loopback in ("127.0.0.1", "localhost", "127.0.0.2"):
        _line, stderr = serve_briefly(tmp_path, "--host", loopback)
        assert warnings_in(stderr) == [], loopback


def test_loopback_binds():
    from loadtester.web.server import is_loopback_bind
    assert all(map(is_loopback_bind, ("127.0.0.1", "127.9.9.9", "localhost", "::1", "[::1]",
                                      "0:0:0:0:0:0:0:1")))
    assert not any(map(is_loopback_bind, ("0.0.0.0", "::", "", "10.0.0.1", "example.com")))


# --------------------------------------------------------------------------- one name

@pytest.mark.timeout(60)
def test_real_localhost_with_a_trailing_dot_is_checked_as_the_blast_resolves_it(start_target,
                                                                              tmp_path):
    """'localhost.' is an absolute DNS name, not /etc/hosts' 'localhost': the check resolves
    what the engine resolves (here, usually nothing), never the name without its dot."""
    import socket

    from test_serve_api import Server
    target = start_target()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo("localhost.", target.port,
                                                                 type=socket.SOCK_STREAM)}
    except socket.gaierror:
        addresses = set()
    server = Server(tmp_path / "runs.db", "--allow-private")
    try:
        started = server.start(url=f"http://localhost.:{target.port}/", users=1, duration=1)
        if not addresses:
            assert started.status == 400
            assert started.json["error"].startswith("cannot resolve host 'localhost.': ")
            assert server.children() == []                     # no blast started
        elif all(ssrf.classify_address(a, True) is None for a in addresses):
            assert started.status == 201, started.body         # a resolver that knows it
        else:
            assert started.status == 400 and "localhost. (" in started.json["error"]
    finally:
        server.terminate()


# --------------------------------------------------------------------------- pipeline on the API

OK_START = {"url": "http://127.0.0.1:9/", "users": 2, "duration": 2}


@pytest.mark.parametrize(("payload", "message"), [
    ({"pipeline": 0}, "invalid pipeline 0: from 1 to 256"),
    ({"pipeline": 257}, "invalid pipeline 257: from 1 to 256"),
    ({"pipeline": 2.5}, "pipeline must be a whole number from 1 to 256"),
    ({"pipeline": "4"}, "pipeline must be a whole number from 1 to 256"),
    ({"pipeline": True}, "pipeline must be a whole number from 1 to 256"),
    ({"pipeline": 4, "rate": 100}, "rate cannot be combined with pipeline above 1: a pipelined "
                                   "connection waits for its whole batch, so there is no "
                                   "timetable to keep"),
])
def test_bad_pipeline_is_a_400_with_one_line(payload, message, db_path):
    with pytest.raises(ApiError) as info:
        validate_start({**OK_START, **payload})
    assert (info.value.status, info.value.message) == (400, message)
    with TestClient(create_app(ServeContext(db_path=db_path, allow_private=True))) as client:
        answer = client.post("/api/start", json={**OK_START, **payload})
    assert answer.status_code == 400 and answer.json() == {"error": message}


def test_pipeline_goes_to_the_blast(tmp_path):
    manager = RunManager(tmp_path / "runs.db")
    deep = manager.command("00000000-0000-4000-8000-000000000001",
                           validate_start({**OK_START, "pipeline": 16.0}))
    assert "--pipeline=16" in deep
    assert validate_start({**OK_START, "pipeline": 1, "rate": 50}).pipeline == 1
    plain = manager.command("00000000-0000-4000-8000-000000000001", validate_start(OK_START))
    assert not any(a.startswith("--pipeline") for a in plain)


@pytest.mark.timeout(60)
def test_real_pipelined_web_run_counts_what_the_target_served(start_target, tmp_path):
    from test_serve_api import Server
    target = start_target()
    server = Server(tmp_path / "runs.db", "--allow-private")
    try:
        started = server.start(url=target.url, users=2, duration=2, pipeline=8)
        assert started.status == 201, started.body
        run_uuid = started.json["uuid"]
        assert server.wait_status(run_uuid, {"completed"}, 30)["result"] == "no thresholds"
        metrics = server.get(f"/api/metrics/{run_uuid}").json
    finally:
        server.terminate()
    served = target.stats()["served"]
    assert metrics["pipeline"] == 8 and metrics["requests"] > 0
    # with -d, requests in flight at the end are not counted: at most -c x depth more served
    assert metrics["requests"] <= served <= metrics["requests"] + 2 * 8


# --------------------------------------------------------------------------- one header grammar

@pytest.mark.parametrize(("name", "value"), [
    ("X-Ok", "v"), ("X-Ok", "tab\tinside"), ("X-Ok", "café"), ("X-Ok", ""), ("!#$%&'*+.^_`|~-", "v"),
    ("X A", "v"), ("X-A", "a\r\nX-B: b"), ("X-A", "a\x00b"), ("X-A", "del\x7f"), ("X-A", "€"),
    ("X-A", "s3cret\x01"), ("", "v"), ("X:A", "v"), ("X\nA", "v"),
])
def test_web_and_cli_share_one_header_grammar(name, value):
    from loadtester.headers import HeaderError, check_header
    try:
        expected = check_header(name, value)
        cli_reason = None
    except HeaderError as exc:
        cli_reason = exc.reason
    try:
        web = validate_start({**OK_START, "headers": {name: value}}).headers
        web_error = None
    except ApiError as exc:
        web_error = exc.message
    if cli_reason is None:
        assert web == [(expected[0], expected[1].strip())]
    else:
        assert web_error == f"header {name!r}: {cli_reason}"
        assert value not in web_error or not value                 # the value is not echoed
    if name and ":" not in name and "\n" not in name:                  # as -H spells it
        try:
            assert parse_header(f"{name}: {value}") == (name, value.strip())
            assert cli_reason is None
        except HeaderError as exc:
            assert exc.reason == cli_reason
