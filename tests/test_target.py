"""The built-in target, spoken to byte by byte over a real socket."""
import json
import socket
import time


def exchange(port, *pieces, read_until_close=False, expect_responses=1):
    """Send `pieces` (a pause between them), return everything read back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.05)
        received = b""
        while True:
            if not read_until_close and received.count(b"HTTP/1.") >= expect_responses \
                    and complete(received):
                return received
            data = sock.recv(65536)
            if not data:
                return received
            received += data


def complete(received):
    """The last response read so far has all of its body."""
    head, found, body = received.rpartition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.rsplit(b"HTTP/1.", 1)[-1].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return True


def test_keep_alive_head_then_get_on_one_connection(start_target):
    target = start_target("--body-size", 100)
    got = exchange(target.port, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
                   b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", expect_responses=2)
    head_response, get_response = got.split(b"HTTP/1.1 ")[1:]
    assert head_response.endswith(b"Content-Length: 100\r\nConnection: keep-alive\r\n\r\n")
    assert get_response.endswith(b"\r\n\r\n" + b"x" * 100)
    assert target.stats()["served"] == 2


def test_http10_without_keep_alive_is_answered_and_closed(start_target):
    target = start_target()
    got = exchange(target.port, b"GET / HTTP/1.0\r\n\r\n", read_until_close=True)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in got and got.endswith(b"Hello, World!")


def test_garbage_gets_400_and_a_close(start_target):
    target = start_target()
    got = exchange(target.port, b"NOT HTTP AT ALL\r\n\r\n", read_until_close=True)
    assert got.startswith(b"HTTP/1.1 400 ")
    assert target.stats()["served"] == 0


def test_control_url_split_across_packets_and_long_urls(start_target):
    target = start_target()
    long_path = b"/" + b"a" * 5000
    exchange(target.port, b"GET " + long_path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    got = exchange(target.port, b"GET /__load", b"tester/stats HTTP/1.1\r\nHost: t\r\n\r\n")
    assert json.loads(got.split(b"\r\n\r\n", 1)[1]) == {"served": 1, "connections": 2}
    got = exchange(target.port, b"GET /__loadtester/nothing HTTP/1.1\r\nHost: t\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 404 ")
    got = exchange(target.port, b"GET /__loadtester/reset HTTP/1.1\r\nHost: t\r\n\r\n")
    assert json.loads(got.split(b"\r\n\r\n", 1)[1])["served"] == 0
