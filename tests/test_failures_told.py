"""Counts and failures that must never be silent: each against real servers on 127.0.0.1,
asserting the exact count, the exit code and the one line the user reads."""
from __future__ import annotations

import json
import socket
import os
import re
import resource
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, blast_json, children_of, cli, free_port, kill_if_alive, request_lines, wait_for


@pytest.mark.parametrize("n, c, rate", [(100, 50, "100"), (10, 10, "50"), (1000, 200, "2000")])
def test_rate_with_a_count_sends_exactly_n(start_target, db, n, c, rate):
    target = start_target()
    report = blast_json(target.url, "-n", n, "-c", c, "--rate", rate, "--store", "none", db=db)
    assert report["requests"] == n and report["status"] == "completed"
    assert target.stats()["served"] == n


def test_first_message_of_each_error_kind_is_reported_and_stored(db):
    port = free_port()
    result = cli("blast", f"http://127.0.0.1:{port}/", "-n", "5", "-c", "2", "--db", db)
    assert f"first connect: connection refused 127.0.0.1:{port}" in result.stdout
    report = json.loads(cli("show", "last", "--json", "--db", db).stdout)
    assert report["error_messages"] == {"connect": f"connection refused 127.0.0.1:{port}"}


def test_an_ipv6_address_in_a_message_is_in_brackets(db):
    with socket.socket(socket.AF_INET6) as sock:          # a free port on ::1, closed again
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
    report = blast_json(f"http://[::1]:{port}/", "-n", "3", "-c", "1", db=db, exit_code=1)
    assert report["error_messages"] == {"connect": f"connection refused [::1]:{port}"}


def test_status_errors_name_the_first_status(start_target, db):
    target = start_target("--status", "503")
    result = cli("blast", target.url, "-n", "20", "-c", "2", "--json", "--db", db)
    report = json.loads(result.stdout)
    assert report["errors_by_kind"] == {"status": 20}
    assert report["error_messages"] == {"status": "HTTP 503"}
    # Nothing but errors is not a success, in the shell as in the web app and the reports.
    assert result.returncode == 1
    assert result.stderr == ("loadtester: no successful response: status 20 (first status "
                             "error: HTTP 503)\n")
    some = start_target()
    assert blast_json(some.url, "-n", "20", "-c", "2", db=db)["successes"] == 20


def _stored_runs(db) -> int:
    if not os.path.exists(db):
        return 0
    listed = cli("runs", "--json", "--db", db)
    return len(json.loads(listed.stdout)) if listed.returncode == 0 else 0


@pytest.mark.parametrize("args, message", [
    (["-H", "X: €"], "a value must be Latin-1 text"),
    (["-H", "X: a\rEvil: b"], "control characters (CR, LF, NUL, ...) are not allowed"),
    (["-H", "X: a\x01b"], "control characters"),
    (["-H", "Bad Name: v"], "the name may hold only"),
    (["-d", "200000d"], "invalid duration '200000d': at most 366 days"),
    (["-d", "99999999999999999999s"], "invalid duration"),
    (["-n", "99999999999999999999"], "invalid request count"),
    (["-c", "99999999999999999999"], "invalid connections"),
    (["--workers", "100000"], "invalid workers"),
    (["--rate", "1e12"], "invalid rate"),
])
def test_bad_input_is_refused_before_anything_is_stored(db, args, message):
    result = cli("blast", "http://127.0.0.1:9/", *args, "--db", db)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert _stored_runs(db) == 0


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:0/", "port 0 is not a port to connect to"),
    ("http://127.0.0.1:1/a\r\nX: y", "control characters are not allowed"),
])
def test_bad_urls_are_usage_errors(db, url, message):
    result = cli("blast", url, "--db", db)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_non_ascii_paths_and_queries_are_percent_encoded(recording_server, db):
    server, heads = recording_server()
    report = blast_json(f"{server.url}caf\u00e9/\u20ac?q=\u00e9 x", "-n", "3", "-c", "1", db=db)
    assert report["requests"] == 3
    assert set(request_lines(heads)) == {"GET /caf%C3%A9/%E2%82%AC?q=%C3%A9%20x HTTP/1.1"}


def test_an_idn_host_is_idna_encoded_and_an_unresolvable_host_named_in_one_line(db):
    result = cli("blast", "http://\u4f8b\u3048.invalid/", "-n", "3", "--db", db)
    assert result.returncode == 1
    assert result.stderr.startswith("loadtester: cannot resolve host xn--r8jz45g.invalid: ")
    assert result.stderr.count("\n") == 1 and "Future exception" not in result.stderr
    assert _stored_runs(db) == 0


def test_no_response_at_all_is_a_failure_with_the_reason(db):
    port = free_port()
    result = cli("blast", f"http://127.0.0.1:{port}/", "-n", "4", "-c", "2", "--db", db)
    assert result.returncode == 1
    assert result.stderr == (f"loadtester: no response at all: connect 4 "
                             f"(connection refused 127.0.0.1:{port})\n")
    assert "Requests     0 completed" in result.stdout


def _limit_open_files(soft, hard):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return set_limit


def test_connections_beyond_the_open_file_limit_are_refused_up_front(start_target, db):
    target = start_target()
    result = subprocess.run([sys.executable, "-m", "loadtester", "blast", target.url, "-c", "5000",
                             "-d", "1s", "--db", str(db)], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, preexec_fn=_limit_open_files(1024, 1024))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "5,000 connections per worker need about 5,064 open files" in result.stderr
    assert "at most 1,024" in result.stderr and _stored_runs(db) == 0


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(start_target, db):
    target = start_target()
    result = subprocess.run([sys.executable, "-m", "loadtester", "blast", target.url, "-c", "600",
                             "-n", "3000", "--json", "--db", str(db)], capture_output=True,
                            text=True, timeout=120, cwd=ROOT,
                            preexec_fn=_limit_open_files(256, 4096))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["requests"] == 3000 and report["errors"] == 0


def test_warnings_for_more_workers_than_cores_and_a_long_ramp_up(start_target, db):
    target = start_target()
    workers = (os.cpu_count() or 1) + 1
    result = cli("blast", target.url, "-c", "4", "--workers", workers, "-d", "1s",
                 "--ramp-up", "3s", "--db", db)
    assert result.returncode == 0, result.stderr
    assert f"loadtester: warning: {workers} workers on {os.cpu_count()} cores" in result.stderr
    assert "loadtester: warning: the ramp-up (3s) is longer than the run (1s)" in result.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_with_its_exit_code_and_the_report(start_target, db, sig, code):
    target = start_target()
    proc = subprocess.Popen([sys.executable, "-m", "loadtester", "blast", target.url, "-c", "4",
                             "-d", "30s", "--db", str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for(lambda: target.stats()["served"] > 100, timeout_s=20)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        kill_if_alive([proc.pid])
    assert proc.returncode == code, err
    assert "[interrupted]" in out and "completed in" in out
    stored = json.loads(cli("show", "last", "--json", "--no-windows", "--db", db).stdout)
    assert stored["status"] == "stopped"


def test_a_killed_worker_is_named_and_counts_stay_consistent(start_target, db):
    target = start_target()
    proc = subprocess.Popen([sys.executable, "-m", "loadtester", "blast", target.url, "-c", "4",
                             "--workers", "2", "-d", "5s", "--json", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for(lambda: len(children_of(proc.pid)) >= 2, timeout_s=20)
        time.sleep(2.5)
        os.kill(sorted(children_of(proc.pid))[-1], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_if_alive([proc.pid])
    assert proc.returncode == 1, err
    report = json.loads(out)
    [death] = report["worker_errors"]
    assert re.fullmatch(r"worker 1 was killed by SIGKILL in second [2-4]; .*", death), death
    assert report["status"] == "failed" and report["requests"] > 0
    rows = cli("export", "last", "--requests", "--format", "ndjson", "--db", db).stdout
    assert rows.count("\n") == report["attempts"]            # summary and stored rows agree
    text = cli("show", "last", "--no-windows", "--db", db).stdout
    assert "Worker died  worker 1 was killed by SIGKILL" in text


def test_a_long_run_with_many_connections_stops_on_time(start_target, db):
    target = start_target()
    report = blast_json(target.url, "-c", "3000", "-d", "3s", "--store", "none", db=db, timeout=60)
    assert report["stop_reason"] == "duration"
    assert 2.9 <= report["duration_s"] <= 3.15, report["duration_s"]
