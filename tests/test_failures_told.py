"""Counts and failures that must never be silent: each against real servers on 127.0.0.1,
asserting the exact count, the exit code and the one line the user reads."""
from __future__ import annotations

import json

import pytest

from conftest import blast_json, cli, free_port


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


def test_status_errors_name_the_first_status(start_target, db):
    target = start_target("--status", "503")
    report = blast_json(target.url, "-n", "20", "-c", "2", db=db)
    assert report["errors_by_kind"] == {"status": 20}
    assert report["error_messages"] == {"status": "HTTP 503"}
