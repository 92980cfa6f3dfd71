"""HTTP/1.1 pipelining (`blast --pipeline N`): batches of N requests in one write, exact
counts, per-response latency and bytes, lost requests counted one by one, HEAD per position.

Servers are started here on 127.0.0.1: the built-in target (`start_target`) and
PipelineServer, which reads requests as they come (several in one recv when the client
pipelines) and answers them as a test scripts."""
from __future__ import annotations

import json
import socket
import sqlite3
import time

import pytest

from conftest import ThreadedListener, blast_json, cli, closing_servers
from loadtester import _engine
from loadtester.model import SpecError
from loadtester.spec import build_spec

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"         # the length a GET would get
CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n7\r\ndefghij\r\n0\r\n\r\n")


class PipelineServer(ThreadedListener):
    """A threaded server on 127.0.0.1. `answer(method, index)` gives the reply to the
    index-th request on its connection: bytes to send, b"" to send nothing (a stall), None
    to close the connection (after sending the replies before it). Replies to the requests of
    one recv go out together, or a few bytes at a time (`dribble`: split across reads)."""

    def __init__(self, answer, dribble: int = 0):
        self.answer = answer
        self.dribble = dribble
        self.requests = 0
        self.recvs_with_requests = 0
        self.most_in_one_recv = 0
        self.methods: list[bytes] = []
        super().__init__(backlog=128)

    def handle(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._serve(conn)

    def _serve(self, conn):
        buf, index = b"", 0
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                replies, seen, close = [], 0, False
                while b"\r\n\r\n" in buf:
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    method = head.split(b" ", 1)[0]
                    seen += 1
                    reply = self.answer(method, index)
                    index += 1
                    with self.lock:
                        self.requests += 1
                        self.methods.append(method)
                    if reply is None:
                        close = True
                        break
                    replies.append(reply)
                with self.lock:
                    self.recvs_with_requests += seen > 0
                    self.most_in_one_recv = max(self.most_in_one_recv, seen)
                self._send(conn, b"".join(replies))
                if close:
                    self._drain(conn)
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _send(self, conn, data: bytes):
        if not self.dribble:
            conn.sendall(data)
            return
        for start in range(0, len(data), self.dribble):
            conn.sendall(data[start:start + self.dribble])
            time.sleep(0.0005)

    @staticmethod
    def _drain(conn):
        # Unread bytes would turn the close into a reset: read what already came.
        conn.setblocking(False)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass



@pytest.fixture
def pipeline_server():
    """pipeline_server(answer, dribble=0) -> a PipelineServer, closed after the test."""
    yield from closing_servers(PipelineServer)


def always(reply):
    return lambda method, index: reply


def stored_rows(db):
    result = cli("export", "last", "--requests", "--format", "ndjson", "--db", db)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def stored_config(db) -> dict:
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute("SELECT config FROM test_runs ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(text)


# --- in process: the spec and the engine refuse what pipelining cannot do --------------


def test_spec_keeps_the_depth_and_refuses_bad_ones():
    spec = build_spec("http://127.0.0.1:9/", requests=10, pipeline=16)
    assert spec.pipeline == 16 and spec.config()["pipeline"] == 16
    assert build_spec("http://127.0.0.1:9/").config()["pipeline"] == 1
    for depth in (0, -1, 257):
        with pytest.raises(SpecError, match="invalid pipeline"):
            build_spec("http://127.0.0.1:9/", pipeline=depth)
    with pytest.raises(SpecError, match="--rate cannot be combined with --pipeline") as info:
        build_spec("http://127.0.0.1:9/", rate="100", pipeline=2)
    assert "\n" not in str(info.value)
    assert build_spec("http://127.0.0.1:9/", rate="100", pipeline=1).rate_per_s == 100


def test_engine_refuses_a_depth_out_of_range_or_with_a_rate():
    origin = _engine.Origin("127.0.0.1", 9)
    origin.add_target(0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", False)
    assert _engine.Client(origins=[origin], pipeline=256).pipeline == 256
    assert _engine.Client(origins=[origin]).pipeline == 1
    for depth in (0, 257):
        with pytest.raises(ValueError, match="pipeline"):
            _engine.Client(origins=[origin], pipeline=depth)
    with pytest.raises(ValueError, match="closed loop"):
        _engine.Client(origins=[origin], pipeline=2, rate_per_s=10.0)


# --- end to end ---------------------------------------------------------------------


@pytest.mark.slow
def test_rate_with_pipeline_is_refused_in_one_line(db):
    result = cli("blast", "http://127.0.0.1:9/", "--rate", "100", "--pipeline", "4",
                 "--db", db)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--rate cannot be combined with --pipeline" in lines[0], lines
    assert not db.exists()
    result = cli("blast", "http://127.0.0.1:9/", "--pipeline", "300", "--db", db)
    assert result.returncode == 2 and "invalid pipeline 300" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_count_is_exact_against_the_targets_own_count(start_target, db):
    target = start_target()
    report = blast_json(target.url, "-n", "100000", "-c", "50", "--pipeline", "16",
                        "--store", "none", db=db)
    assert report["requests"] == 100_000 == target.stats()["served"]
    assert report["errors"] == 0 and report["status_codes"] == {"200": 100_000}
    assert stored_config(db)["pipeline"] == 16


@pytest.mark.slow
def test_requests_really_go_out_pipelined_and_the_count_is_exact(pipeline_server, db):
    server = pipeline_server(always(OK))
    # 1003 over 3 connections at depth 8: full batches, then shorter ones to end exactly.
    report = blast_json(server.url, "-n", "1003", "-c", "3", "--pipeline", "8", db=db)
    assert report["requests"] == 1003 == server.requests
    assert report["errors"] == 0 and report["bytes"] == 1003 * len(OK)
    assert server.most_in_one_recv == 8            # a whole batch arrived in one recv
    assert server.recvs_with_requests < 1003 / 4
    # each response's own bytes, even when several arrive in one read
    rows = stored_rows(db)
    assert len(rows) == 1003 and {row["bytes"] for row in rows} == {len(OK)}


@pytest.mark.slow
@pytest.mark.parametrize("reply, dribble", [(OK, 7), (CHUNKED, 0), (CHUNKED, 5)],
                         ids=["length-dribbled", "chunked", "chunked-dribbled"])
def test_each_response_gets_its_own_bytes_however_they_arrive(pipeline_server, db, reply,
                                                              dribble):
    server = pipeline_server(always(reply), dribble=dribble)
    report = blast_json(server.url, "-n", "96", "-c", "2", "--pipeline", "6", db=db)
    assert report["requests"] == 96 == server.requests and report["errors"] == 0
    assert report["bytes"] == 96 * len(reply)
    assert {row["bytes"] for row in stored_rows(db)} == {len(reply)}


@pytest.mark.slow
def test_depth_one_is_one_request_at_a_time(pipeline_server, db):
    server = pipeline_server(always(OK))
    report = blast_json(server.url, "-n", "500", "-c", "4", db=db)
    assert report["requests"] == 500 == server.requests and report["errors"] == 0
    assert server.most_in_one_recv == 1
    assert {row["bytes"] for row in stored_rows(db)} == {len(OK)}
    assert stored_config(db)["pipeline"] == 1


def test_latency_is_per_response_from_the_batch_write(start_target, db):
    # The built-in target delays every request by 20 ms from its arrival and answers in
    # order, so a batch of 8 costs one delay, not 8: every response is timed from the batch's
    # write and takes about 20 ms.
    target = start_target("--delay", "20ms")
    report = blast_json(target.url, "-n", "256", "-c", "4", "--pipeline", "8",
                        "--store", "none", db=db)
    latency = report["latency_ms"]
    assert latency["min"] >= 20.0 and latency["p50"] >= 20.0
    # Queued one after another, a batch's responses would take 20, 40, ... 160 ms (p50 ~ 90);
    # timed from the batch's write at a target that answers them together, all take ~20 ms.
    # (Bounds are loose: the count, not the clock, is what this test pins exactly.)
    assert latency["p50"] < 60.0, latency
    assert report["requests"] == 256 == target.stats()["served"]
    assert report["errors"] == 0


@pytest.mark.slow
def test_a_close_after_three_of_eight_is_three_responses_and_five_read_errors(
        pipeline_server, db):
    server = pipeline_server(lambda method, index: OK if index < 3 else None)
    report = blast_json(server.url, "-n", "16", "-c", "1", "--pipeline", "8", db=db)
    # two batches of 8 (-n 16): each one 3 answered, 5 lost to the close
    assert report["requests"] == 6 and report["successes"] == 6
    assert report["errors_by_kind"] == {"read": 10}
    assert report["attempts"] == 16
    assert report["error_messages"]["read"] == ("connection closed with 5 of 8 pipelined "
                                                "requests unanswered")


@pytest.mark.slow
def test_a_stall_with_four_outstanding_is_four_timeouts(pipeline_server, db):
    server = pipeline_server(lambda method, index: OK if index < 2 else b"")
    report = blast_json(server.url, "-n", "6", "-c", "1", "--pipeline", "6",
                        "--timeout", "300ms", db=db)
    assert report["requests"] == 2
    assert report["errors_by_kind"] == {"timeout": 4}
    assert server.requests == 6


@pytest.mark.slow
def test_head_in_a_pipeline_is_read_per_position(pipeline_server, db, tmp_path):
    server = pipeline_server(lambda method, index: HEAD_OK if method == b"HEAD" else OK)
    targets = tmp_path / "targets.txt"
    targets.write_text(f"GET {server.url}\n\nHEAD {server.url}\n\nGET {server.url}\n")
    # depth 5 over 3 targets: every batch starts at another turn, HEADs at every position
    result = cli("blast", "--targets", targets, "-n", "600", "-c", "2", "--pipeline", "5",
                 "--json", "--db", db)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["requests"] == 600 == server.requests
    assert report["errors"] == 0, report["error_messages"]
    assert report["bytes"] == 400 * len(OK) + 200 * len(HEAD_OK)
    assert server.methods.count(b"HEAD") == 200
    assert [t["requests"] for t in report["targets"]] == [200, 200, 200]
    assert server.most_in_one_recv == 5
