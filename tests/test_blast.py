"""`loadtester blast` end to end: real target processes on 127.0.0.1, the real CLI."""
import json
import time

import pytest

from conftest import blast_json, cli, free_port


def test_count_is_exact_against_the_targets_own_count(start_target, db):
    target = start_target()
    report = blast_json(target.url, "-n", "100000", "-c", "50", "--store", "none", db=db)
    served = target.stats()["served"]
    assert report["requests"] == 100_000
    assert served == 100_000
    assert report["errors"] == 0 and report["status_codes"] == {"200": 100_000}
    assert report["success_rate"] == 1.0
    assert report["bytes"] > 100_000 * 13


def test_duration_run_is_within_the_connection_count_of_the_target(start_target, db):
    target = start_target()
    report = blast_json(target.url, "-d", "2s", "-c", "40", "--store", "none", db=db)
    served = target.stats()["served"]
    # requests still in flight when time is up are not counted (as wrk)
    assert 0 <= served - report["requests"] <= 40
    assert report["requests"] > 1000
    assert 1.9 < report["duration_s"] < 2.5
    assert report["stop_reason"] == "duration"


def test_latency_against_a_known_delay(start_target, db):
    target = start_target("--delay", "50ms")
    report = blast_json(target.url, "-d", "3s", "-c", "20", "--store", "none", db=db)
    lat = report["latency_ms"]
    assert lat["min"] >= 50.0
    assert 50.0 <= lat["p50"] <= 52.0
    assert lat["p99"] < 60.0
    # closed loop: 20 connections each about 20 responses per second
    assert 20 * 20 * 3 * 0.85 <= report["requests"] <= 20 * 20 * 3


def test_workers_split_the_count_and_merge(start_target, db):
    target = start_target()
    report = blast_json(target.url, "-n", "20001", "-c", "10", "--workers", "2",
                        "--store", "none", db=db)
    assert report["workers"] == 2
    assert report["requests"] == 20001 == target.stats()["served"]


def test_status_errors_are_counted_not_raised(start_target, db):
    target = start_target("--status", "500")
    report = blast_json(target.url, "-n", "2000", "-c", "10", db=db, exit_code=1)
    assert report["requests"] == 2000
    assert report["successes"] == 0 and report["success_rate"] == 0.0
    assert report["errors_by_kind"] == {"status": 2000}
    assert report["status_codes"] == {"500": 2000}


def test_target_down_is_a_connect_error(db):
    url = f"http://127.0.0.1:{free_port()}/"
    report = blast_json(url, "-n", "30", "-c", "3", db=db, exit_code=1)
    assert report["requests"] == 0
    assert report["errors_by_kind"] == {"connect": 30}
    assert report["success_rate"] == 0.0


def test_stalled_target_is_a_timeout(raw_server, db):
    server = raw_server(lambda conn, head: time.sleep(30) or True)
    report = blast_json(server.url, "-d", "1.5s", "-c", "4", "--timeout", "300ms", db=db,
                        exit_code=1)
    assert report["requests"] == 0
    assert report["errors_by_kind"]["timeout"] >= 4
    assert set(report["errors_by_kind"]) == {"timeout"}


@pytest.mark.parametrize("connection_header", [b"", b"Connection: close\r\n"])
def test_close_mid_response_is_a_read_error(raw_server, db, connection_header):
    def half(conn, head):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n" + connection_header
                     + b"\r\nonly part")
        return False
    server = raw_server(half)
    report = blast_json(server.url, "-n", "50", "-c", "5", db=db, exit_code=1)
    assert report["errors_by_kind"] == {"read": 50}
    assert report["requests"] == 0
    assert report["error_messages"] == {"read": "connection closed before the response was complete"}


def test_garbage_response_is_a_parse_error(raw_server, db):
    def garbage(conn, head):
        conn.sendall(b"SMTP READY\r\nthis is not http\r\n\r\n")
        return True
    server = raw_server(garbage)
    report = blast_json(server.url, "-n", "40", "-c", "4", db=db, exit_code=1)
    assert report["errors_by_kind"] == {"parse": 40}
    assert report["error_messages"]["parse"].startswith("not an HTTP/1 response: ")


@pytest.mark.parametrize("args, message", [
    (["ftp://127.0.0.1/"], "scheme must be http or https"),
    (["not a url"], "scheme must be http or https"),
    (["http:///nohost"], "no host"),
    (["http://127.0.0.1:1/", "-c", "0"], "connections"),
    (["http://127.0.0.1:1/", "-d", "-5s"], "invalid duration"),
    (["http://127.0.0.1:1/", "-d", "soon"], "invalid duration"),
    (["http://127.0.0.1:1/", "-d", "0s"], "must be more than 0"),
    (["http://127.0.0.1:1/", "--body-file", "/nonexistent/body.json"], "cannot read body file"),
    (["http://127.0.0.1:1/", "-d", "1s", "-n", "10"], "not both"),
    (["http://127.0.0.1:1/", "-H", "NoColonHere"], "invalid header"),
    (["http://127.0.0.1:1/", "--rate", "fast"], "invalid rate"),
    (["http://127.0.0.1:1/", "--workers", "0"], "workers"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, db):
    result = cli("blast", *args, "--db", db)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not db.exists()          # nothing was started, nothing stored


def test_text_report_has_every_figure(start_target, db):
    target = start_target()
    result = cli("blast", target.url, "-n", "3000", "-c", "10", "--label", "smoke", "--db", db)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for word in ("3,000 completed", "req/s", "Success", "100.00%", "p50", "p99.9", "stdev",
                 "Status codes", "200: 3,000", "Errors", "none", "Stored", "label 'smoke'"):
        assert word in out, (word, out)


def test_credentials_go_on_the_wire_but_not_into_the_database(recording_server, tmp_path):
    # The database is backed up, exported and shared: a run keeps the names of its credential
    # headers (and Authorization's scheme), never their values.
    server, heads = recording_server()
    db = tmp_path / "runs.db"
    report = blast_json(server.url, "-n", "20", "-c", "2", "--store", "requests",
                        "-H", "Authorization: Bearer s3cret-token", "-H", "Cookie: sid=c00kie",
                        "-H", "X-Api-Key: k3y", "-H", "X-Trace: visible-1", db=db)
    assert report["requests"] == 20 == len(heads)
    for head in heads:
        assert b"Authorization: Bearer s3cret-token" in head and b"Cookie: sid=c00kie" in head
        assert b"X-Api-Key: k3y" in head
    import sqlite3
    with sqlite3.connect(db) as conn:
        headers, config = conn.execute("SELECT headers, config FROM test_runs").fetchone()
    assert json.loads(headers) == {"Authorization": "Bearer ***", "Cookie": "***",
                                   "X-Api-Key": "***", "X-Trace": "visible-1"}
    assert json.loads(config)["headers"] == [["Authorization", "Bearer ***"],
                                             ["Cookie", "***"], ["X-Api-Key", "***"],
                                             ["X-Trace", "visible-1"]]
    for path in tmp_path.glob("runs.db*"):                # the WAL and the spool too
        stored = path.read_bytes()
        assert b"s3cret-token" not in stored and b"c00kie" not in stored, path
        assert b"k3y" not in stored, path


def test_a_request_body_goes_on_the_wire_but_only_its_size_and_sha256_are_kept(recording_server, tmp_path):
    import hashlib
    import sqlite3
    server, heads = recording_server()
    db = tmp_path / "runs.db"
    body = b'{"user": "ann", "password": "hunter2-secret"}'
    report = blast_json(server.url, "-n", "5", "-c", "1", "-m", "POST", "--body", body.decode(),
                        "--store", "requests", db=db)
    assert report["requests"] == 5 == len(heads)
    assert all(f"Content-Length: {len(body)}".encode() in head for head in heads)
    with sqlite3.connect(db) as conn:
        stored_body, config = conn.execute("SELECT body, config FROM test_runs").fetchone()
    assert stored_body is None
    assert (json.loads(config)["body_bytes"], json.loads(config)["body_sha256"]) == \
        (len(body), hashlib.sha256(body).hexdigest())
    for path in tmp_path.glob("runs.db*"):
        assert b"hunter2-secret" not in path.read_bytes(), path
