"""HTTP/1.1 responses of every shape the engine must read correctly."""
import re

import pytest

from conftest import blast_json, request_lines


def respond_with(raw: bytes, keep_open=True):
    def handler(conn, head):
        conn.sendall(raw)
        return keep_open
    return handler


def test_chunked_bodies(raw_server, db):
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (b"a" * 100, b"b" * 7000))
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"
    server = raw_server(respond_with(raw))
    report = blast_json(server.url, "-n", "500", "-c", "5", db=db)
    assert report["requests"] == 500 == server.requests
    assert report["errors"] == 0
    assert report["bytes"] == 500 * len(raw)


def test_connection_close_reconnects_every_request(raw_server, db):
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    server = raw_server(respond_with(raw, keep_open=False))
    report = blast_json(server.url, "-n", "300", "-c", "3", db=db)
    assert report["requests"] == 300 == server.requests
    assert report["errors"] == 0
    assert server.connections >= 300


def test_http10_body_until_close(raw_server, db):
    raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody ends at close"
    server = raw_server(respond_with(raw, keep_open=False))
    report = blast_json(server.url, "-n", "100", "-c", "2", db=db)
    assert report["requests"] == 100
    assert report["errors"] == 0


def test_interim_100_continue_then_final(raw_server, db):
    raw = (b"HTTP/1.1 100 Continue\r\n\r\n"
           b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew")
    server = raw_server(respond_with(raw))
    report = blast_json(server.url, "-n", "200", "-c", "4", "-m", "POST", "--body", "x=1", db=db)
    assert report["requests"] == 200
    assert report["status_codes"] == {"201": 200}


def test_switching_protocols_is_counted_and_the_connection_replaced(raw_server, db):
    raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    server = raw_server(respond_with(raw))
    report = blast_json(server.url, "-n", "20", "-c", "2", db=db)
    assert report["requests"] == 20 == server.requests
    assert report["status_codes"] == {"101": 20}
    assert report["errors"] == 0
    assert server.connections >= 20


def test_head_responses_carry_no_body(recording_server, db):
    server, heads = recording_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")
    report = blast_json(server.url, "-n", "300", "-c", "3", "-m", "HEAD", db=db)
    assert report["requests"] == 300
    assert report["errors"] == 0
    assert {line.split(" ", 1)[0] for line in request_lines(heads)} == {"HEAD"}


@pytest.mark.parametrize("size", [0, 1, 65_536, 3_000_000])
def test_bodies_of_any_size(start_target, db, size):
    target = start_target("--body-size", size)
    count = 20 if size > 1_000_000 else 500
    report = blast_json(target.url, "-n", count, "-c", "4", db=db)
    assert report["requests"] == count
    assert report["errors"] == 0
    assert report["bytes"] >= count * size


def test_request_bodies_larger_than_the_socket_buffer(raw_server, db, tmp_path):
    # A body this size cannot go out in one send: the rest is queued on the
    # transport, and the next request must follow it, not overtake it.
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(bytes(range(256)) * (64 * 1024))      # 16 MiB
    server = raw_server(respond_with(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    report = blast_json(server.url, "-n", "4", "-c", "1", "-m", "POST",
                        "--body-file", str(body_file), "--timeout", "30s", db=db)
    assert report["requests"] == 4 == server.requests
    assert report["errors"] == 0
    assert server.connections == 1


def test_headers_and_body_are_sent_as_given(recording_server, db):
    server, heads = recording_server()
    blast_json(server.url + "path?q=1", "-n", "5", "-c", "1", "-m", "put",
               "-H", "X-Token: abc", "-H", "User-Agent: custom/1", "--body", "{\"a\":1}", db=db)
    head = heads[0].decode()
    assert head.startswith("PUT /path?q=1 HTTP/1.1\r\n")
    assert "X-Token: abc" in head and "User-Agent: custom/1" in head
    assert "loadtester/" not in head
    assert re.search(r"(?i)content-length: 7", head)
    assert f"Host: 127.0.0.1:{server.port}" in head
