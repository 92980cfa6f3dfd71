"""The command line as a person meets it: TLS, Ctrl-C, the live line, help, exit codes."""
import json
import os
import pty
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, blast_json, cli, self_signed_cert


@pytest.fixture
def self_signed(tmp_path):
    return self_signed_cert(tmp_path)


def test_https_with_insecure_and_verification_failure(start_target, self_signed, db):
    cert, key = self_signed
    target = start_target("--tls-cert", cert, "--tls-key", key)
    assert target.url.startswith("https://")
    report = blast_json(target.url, "-n", "2000", "-c", "10", "--insecure", db=db)
    assert report["requests"] == 2000 == target.stats()["served"]
    assert report["errors"] == 0
    # without --insecure the self-signed certificate is refused: connect errors, no crash
    refused = blast_json(target.url, "-n", "20", "-c", "2", db=db, exit_code=1)
    assert refused["requests"] == 0
    assert refused["errors_by_kind"] == {"connect": 20}
    message = refused["error_messages"]["connect"]        # as hey prints its x509 line
    assert message.startswith("TLS: certificate verify failed: self-signed certificate"), message


def test_ctrl_c_stops_cleanly_and_still_reports(start_target, db):
    target = start_target()
    proc = subprocess.Popen([sys.executable, "-m", "loadtester", "blast", target.url, "-d", "30s",
                             "-c", "10", "--json", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err                   # 128 + SIGINT, as shells report it
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["stop_reason"] == "interrupted"
    assert report["status"] == "stopped"
    assert report["requests"] > 100
    assert 1.0 < report["duration_s"] < 10
    runs = json.loads(cli("runs", "--json", "--db", db).stdout)
    assert runs[0]["status"] == "stopped"


def test_live_progress_line_once_a_second_on_a_tty(start_target, db):
    target = start_target()
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "loadtester", "blast", target.url, "-d", "3s",
                             "-c", "5", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=follower, text=True, cwd=ROOT)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=20)
    os.close(leader)
    assert proc.returncode == 0
    lines = [part for part in seen.decode(errors="replace").split("\r") if "req/s" in part]
    assert 2 <= len(lines) <= 4, seen
    assert all("p99" in line and "errors" in line for line in lines)
    assert "completed" in out


def test_no_progress_line_when_not_a_tty(start_target, db):
    target = start_target()
    result = cli("blast", target.url, "-d", "1.5s", "-c", "2", "--db", db)
    assert result.returncode == 0
    assert "req/s  p99" not in result.stderr


def test_help_and_version():
    assert cli("--help").returncode == 0
    result = cli("blast", "--help")
    assert result.returncode == 0 and "--connections" in result.stdout
    assert "loadtester" in cli("--version").stdout


def test_unknown_option_and_missing_url_are_usage_errors():
    for args in (["blast"], ["blast", "http://127.0.0.1:1/", "--bogus"], ["nosuchcommand"]):
        result = cli(*args)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_target_port_in_use_is_one_line(start_target):
    target = start_target()
    result = cli("target", "--port", target.port, "--lifetime", "2s", timeout=20)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("loadtester: cannot listen")
    assert len(result.stderr.strip().splitlines()) == 1
