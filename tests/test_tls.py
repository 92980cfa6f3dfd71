"""HTTPS as the engine drives it (engine/tls.pyx: OpenSSL over memory BIOs): exact counts
over keep-alive, close-per-request and pipelining, session resumption seen from the
server, and every handshake failure told in one line (a connect error, exit 1)."""
import itertools
import json
import os
import socket
import ssl
import struct

import pytest

from conftest import ThreadedListener, blast_json, cli, closing_servers, self_signed_cert

CLOSE_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Listener(ThreadedListener):
    """A listener for TLS clients (the subclass's handle(conn) speaks, or breaks, TLS)."""

    scheme = "https"


class TlsServer(Listener):
    """An HTTPS server (Python's ssl) that answers each request and closes the connection;
    it counts requests, and handshakes full and resumed."""

    def __init__(self, cert, key, host="127.0.0.1", plain_answer=False, port=0):
        self.cert = cert
        self.plain_answer = plain_answer      # answer outside TLS, on the raw socket
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.requests = self.full_handshakes = self.resumed_handshakes = 0
        super().__init__(host, backlog=128, port=port)

    def handle(self, conn):
        conn.settimeout(10)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                with self.lock:
                    if tls.session_reused:
                        self.resumed_handshakes += 1
                    else:
                        self.full_handshakes += 1
                seen = b""
                while b"\r\n\r\n" not in seen:
                    data = tls.recv(65536)
                    if not data:
                        return
                    seen += data
                with self.lock:
                    self.requests += 1
                if self.plain_answer:
                    os.write(tls.fileno(), CLOSE_RESPONSE)
                else:
                    tls.sendall(CLOSE_RESPONSE)
        except OSError:                 # (ssl.SSLError included)
            return


class HandshakeBreaker(Listener):
    """Per connection: reads the ClientHello and then resets the connection (SO_LINGER 0),
    or never answers (silent=True)."""

    def __init__(self, silent=False):
        self.silent = silent
        super().__init__()

    def handle(self, conn):
        if self.silent:
                return
        try:
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        conn.close()


@pytest.fixture
def tls_server(tmp_path):
    """tls_server(san, host, plain_answer) -> a TlsServer with a new certificate for `san`."""
    made = itertools.count()

    def make(san="IP:127.0.0.1", host="127.0.0.1", plain_answer=False):
        return TlsServer(*self_signed_cert(tmp_path, san, name=f"server{next(made)}"), host,
                         plain_answer)
    yield from closing_servers(make)


@pytest.fixture
def breaker():
    """breaker(silent=False) -> a HandshakeBreaker, closed after the test."""
    yield from closing_servers(HandshakeBreaker)


def test_keep_alive_count_and_bytes_exact_over_large_responses(start_target, tmp_path, db):
    # 100 kB bodies span several TLS records and reads: each is decrypted and parsed.
    target = start_target(*tls_target_args(tmp_path), "--body-size", "100000")
    report = blast_json(target.url, "-n", "600", "-c", "6", "--insecure", db=db)
    assert report["requests"] == 600 == target.stats()["served"]
    assert report["errors"] == 0
    assert report["status_codes"] == {"200": 600}
    assert report["bytes"] >= 600 * 100_000


def test_pipelining_over_tls_is_exact(start_target, tmp_path, db):
    target = start_target(*tls_target_args(tmp_path))
    report = blast_json(target.url, "-n", "20000", "-c", "8", "--pipeline", "16", "--insecure",
                        db=db)
    assert report["requests"] == 20000 == target.stats()["served"]
    assert report["errors"] == 0


def test_close_per_request_is_exact_and_resumes_sessions(tls_server, db):
    server = tls_server()
    report = blast_json(server.url, "-n", "300", "-c", "4", "--workers", "1", "--insecure", db=db)
    assert report["requests"] == 300 == server.requests
    assert report["errors"] == 0
    # Only the first connections (none has ended yet) have no session to offer. (A
    # connection may reconnect after its last response, before the run sees it is spent.)
    assert server.full_handshakes <= 4, (server.full_handshakes, server.resumed_handshakes)
    assert 300 <= server.full_handshakes + server.resumed_handshakes <= 300 + 4


def test_sslkeylogfile_gets_the_secrets_of_every_connection(tls_server, db, tmp_path,
                                                           monkeypatch):
    server = tls_server()
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    report = blast_json(server.url, "-n", "6", "-c", "2", "--insecure", db=db)
    assert report["requests"] == 6 == server.requests
    lines = [line for line in keylog.read_text().splitlines() if not line.startswith("#")]
    # TLS 1.3: one CLIENT_TRAFFIC_SECRET_0 line per connection, each "LABEL random secret"
    assert sum(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in lines) >= 6
    assert all(len(line.split()) == 3 for line in lines), lines[:3]


def test_verified_without_insecure_when_the_ca_is_trusted(tls_server, db, monkeypatch):
    server = tls_server("IP:127.0.0.1")
    # Python's default context (the one blast uses) reads trusted CAs from SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
    report = blast_json(server.url, "-n", "20", "-c", "2", db=db)
    assert report["requests"] == 20 == server.requests
    assert report["errors"] == 0


def test_ipv6_loopback_verified_by_its_address(tls_server, db, monkeypatch):
    server = tls_server("IP:::1", host="::1")
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
    report = blast_json(server.url, "-n", "20", "-c", "2", db=db)
    assert report["requests"] == 20 == server.requests
    assert report["errors"] == 0


def test_hostname_mismatch_is_reported(tls_server, db, monkeypatch):
    server = tls_server("DNS:localhost")          # trusted, but not for 127.0.0.1
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
    report = blast_json(server.url, "-n", "5", "-c", "1", db=db, exit_code=1)
    assert report["requests"] == 0 and server.requests == 0
    assert report["errors_by_kind"] == {"connect": 5}
    port = server.url.rsplit(":", 1)[1].rstrip("/")
    message = f"TLS: certificate verify failed: IP address mismatch (127.0.0.1:{port})"
    assert report["error_messages"] == {"connect": message}
    # the stored run and its text report say the same
    stored = json.loads(cli("show", "last", "--json", "--no-windows", "--db", db).stdout)
    assert stored["error_messages"] == {"connect": message}
    assert f"first connect: {message}" in cli("show", "last", "--no-windows", "--db", db).stdout


def test_self_signed_refused_then_accepted_with_insecure(tls_server, db):
    server = tls_server()
    refused = blast_json(server.url, "-n", "6", "-c", "2", db=db, exit_code=1)
    assert refused["errors_by_kind"] == {"connect": 6} and server.requests == 0
    assert refused["error_messages"]["connect"].startswith(
        "TLS: certificate verify failed: self-signed certificate (127.0.0.1:")
    accepted = blast_json(server.url, "-n", "6", "-c", "2", "--insecure", db=db)
    assert accepted["requests"] == 6 == server.requests


def test_answer_outside_tls_is_a_read_error_told(tls_server, db):
    server = tls_server(plain_answer=True)
    report = blast_json(server.url, "-n", "4", "-c", "1", "--insecure", db=db, exit_code=1)
    assert server.requests == 4
    assert report["requests"] == 0
    assert report["errors_by_kind"] == {"read": 4}
    assert report["error_messages"]["read"].startswith("TLS: "), report["error_messages"]


def test_reset_during_handshake_is_a_connect_error(breaker, db):
    server = breaker()
    report = blast_json(server.url, "-n", "5", "-c", "1", "--insecure", db=db, exit_code=1)
    assert report["requests"] == 0
    assert report["errors_by_kind"] == {"connect": 5}
    assert server.connections == 5
    port = server.url.rsplit(":", 1)[1].rstrip("/")
    assert report["error_messages"]["connect"] == (
        f"TLS: connection reset by peer during the handshake (127.0.0.1:{port})")


def test_handshake_that_never_ends_times_out_as_connect_error(breaker, db):
    server = breaker(silent=True)
    report = blast_json(server.url, "-n", "2", "-c", "1", "--timeout", "1s", "--insecure",
                        db=db, exit_code=1)
    assert report["requests"] == 0
    assert report["errors_by_kind"] == {"connect": 2}
    assert report["error_messages"]["connect"].startswith("connect timed out 127.0.0.1:")


def test_plain_http_server_behind_https_url_is_told(start_target, db):
    target = start_target()                        # plain HTTP
    url = target.url.replace("http://", "https://")
    report = blast_json(url, "-n", "3", "-c", "1", "--insecure", db=db, exit_code=1)
    assert report["errors_by_kind"] == {"connect": 3}
    assert report["error_messages"]["connect"].startswith("TLS: ")


def tls_target_args(directory):
    cert, key = self_signed_cert(directory, name="target")
    return ["--tls-cert", cert, "--tls-key", key]




def test_https_refused_in_one_line_when_this_python_cannot_bind_openssl(monkeypatch):
    # The engine binds OpenSSL from Python's own ssl module at import; if that fails (another
    # build of Python), plain HTTP still runs and an https URL is refused before anything
    # is stored. (The failure itself cannot be produced here: the check is given its answer.)
    from loadtester.run import runner
    from loadtester.spec import build_spec
    monkeypatch.setattr(runner, "tls_unavailable", lambda: "no SSL_new in its OpenSSL")
    with pytest.raises(runner.RunRefused) as refused:
        runner.preflight(build_spec("https://127.0.0.1:8443/", requests=1))
    assert str(refused.value) == ("cannot send HTTPS from this Python: no SSL_new in its "
                                  "OpenSSL")
    assert runner.preflight(build_spec("http://127.0.0.1:8080/", requests=1)) == []
