"""Shared fixtures: real servers on 127.0.0.1, the real CLI in a subprocess."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# End-to-end: these start real servers, blasts, browsers, containers or benchmarks.
# `pytest -m "not slow"` is the quick loop; `make test` runs everything.
SLOW_MODULES = {"test_bench", "test_blast", "test_browser", "test_cli", "test_deploy",
                "test_load_models", "test_persistence", "test_protocol", "test_serve_api",
                "test_target", "test_failures_told", "test_tls", "test_web_ui"}
# Fixtures that start a real server or run blasts (module fixtures included).
SLOW_FIXTURES = {"start_target", "raw_server", "runs", "shards", "merged", "stored_run"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end to end, with real servers and processes "
                                       "(deselect with -m 'not slow')")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if (module in SLOW_MODULES or item.name.startswith("test_real_")
                or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.slow)


def cli(*args, timeout=120, env=None, cwd=None):
    """Run `python -m loadtester ARGS`; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "loadtester", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd or ROOT)


def blast_json(url, *args, db, timeout=120, exit_code=0):
    result = cli("blast", url, "--json", "--db", db, *args, timeout=timeout)
    assert result.returncode == exit_code, result.stderr
    return json.loads(result.stdout)


class TargetProcess:
    """`loadtester target` on a free port, in its own process."""

    def __init__(self, *args, lifetime="300s"):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtester", "target", "--port", "0", "--lifetime", lifetime,
             *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        match = re.search(r"(https?)://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"target did not start: {line!r} {self.proc.stderr.read()}")
        self.port = int(match.group(2))
        self.url = f"{match.group(1)}://127.0.0.1:{self.port}/"

    def stats(self) -> dict:
        from loadtester.localtarget import fetch_stats
        return fetch_stats(self.url)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return out


@pytest.fixture
def start_target():
    started = []

    def start(*args):
        target = TargetProcess(*args)
        started.append(target)
        return target

    yield start
    for target in started:
        target.stop()


def self_signed_cert(directory: Path, san: str = "IP:127.0.0.1,DNS:localhost",
                     name: str = "cert") -> tuple[Path, Path]:
    """A self-signed certificate (and its key) made by the openssl CLI, valid for `san`."""
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return cert, key


@pytest.fixture
def db(tmp_path):
    return tmp_path / "runs.db"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadedListener:
    """A TCP listener on 127.0.0.1 (or ::1) that hands each accepted connection to the
    subclass's handle(conn), one thread each; counts connections; close() closes them all.
    A subclass sets its own fields before calling this __init__: connections may come at once."""

    scheme = "http"

    def __init__(self, host: str = "127.0.0.1", backlog: int = 512, port: int = 0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, port), family=family, backlog=backlog)
        self.port = self.sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{self.scheme}://{shown}:{self.port}/"
        self.lock = threading.Lock()
        self.connections = 0
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.append(conn)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self):
        self.closed = True
        self.sock.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


class RawServer(ThreadedListener):
    """A threaded TCP server on 127.0.0.1 (or `host`: ::1) whose replies a test scripts.

    `handler(conn, request_bytes) -> bool` answers one request; it returns False
    to close the connection. Counts requests it saw and connections accepted.
    """

    def __init__(self, handler, host: str = "127.0.0.1", port: int = 0):
        self.handler = handler
        self.requests = 0
        super().__init__(host, port=port)

    def handle(self, conn):
        buf = b""
        try:
            while not self.closed:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                    if length:
                        need = int(length.group(1))
                        while len(buf) < need:
                            more = conn.recv(65536)
                            if not more:
                                return
                            buf += more
                        buf = buf[need:]
                    with self.lock:
                        self.requests += 1
                    if not self.handler(conn, head):
                        return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass



def begin_stored_run(db_path, **columns):
    """A RunWriter (store_mode windows) that has begun a run at example.com (the columns given
    replace the defaults): for tests that write a run's windows themselves."""
    from loadtester.store import RunWriter
    writer = RunWriter(db_path, store_mode="windows")
    writer.begin({"url": "http://example.com:8080/x", "host": "example.com", "method": "GET",
                  "mode": "closed", "total_users": 2, "workers": 1, "duration": 10.0, **columns})
    return writer


def closing_servers(make):
    """A server fixture's body: yields start(*args, **kwargs) = make(*args, **kwargs), and
    closes every server it made at teardown (`yield from closing_servers(Server)`)."""
    servers = []

    def start(*args, **kwargs):
        server = make(*args, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def raw_server():
    """raw_server(handler, host="127.0.0.1", port=0) -> a RawServer, closed after the test."""
    yield from closing_servers(RawServer)


OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
def recording_server(raw_server):
    """recording_server(response=OK_RESPONSE, host="127.0.0.1", port=0) -> (a RawServer that
    answers every request with `response`, the list of the request heads it saw, in order)."""
    def start(response: bytes = OK_RESPONSE, host: str = "127.0.0.1", port: int = 0):
        heads: list[bytes] = []

        def answer(conn, head):
            heads.append(head)
            conn.sendall(response)
            return True

        return raw_server(answer, host, port), heads
    return start


def request_lines(heads) -> list[str]:
    """'METHOD target HTTP/1.1' of each request head, in order."""
    return [head.split(b"\r\n", 1)[0].decode() for head in heads]


def header_values(heads, name: bytes) -> list[str]:
    """The values of header `name` (any case) in each of the request heads, in order."""
    return [line.split(b":", 1)[1].strip().decode() for head in heads
            for line in head.split(b"\r\n")[1:] if line.lower().startswith(name.lower() + b":")]


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()       # [state, ppid, ...]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def is_alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def kill_if_alive(pids):
    """Only processes this test started (a blast's own workers)."""
    for pid in pids:
        if is_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_for(predicate, timeout_s=10.0, interval_s=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


def read_only_dirs_are_enforced(tmp_path) -> bool:
    """False for root with CAP_DAC_OVERRIDE, which writes into 0o500 directories anyway."""
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o500)
    try:
        (probe / "x").touch()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)
    return False


@pytest.fixture
def db_path(tmp_path):
    """A new, migrated database file (the web tests' store)."""
    from loadtester import store
    path = tmp_path / "web.db"
    store.open_database(path).close()
    return path
