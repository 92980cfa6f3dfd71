"""The library without the CLI process: spec -> run.blast -> store -> report, in this process,
against the built-in target (a real server on 127.0.0.1); then `runs`, `show` and `export`
through click's CliRunner on the real top-level group."""
from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from loadtester import store
from loadtester.analysis.report import render_text, report_from_row
from loadtester.cli import cli as top_level
from loadtester.cli import db as db_commands
from loadtester.cli import history, run
from loadtester.run.blast import blast
from loadtester.spec import build_spec

for family in (run, history, db_commands):
    family.register(top_level)


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    from conftest import TargetProcess
    target = TargetProcess()
    db = tmp_path_factory.mktemp("inprocess") / "runs.db"
    try:
        spec = build_spec(target.url, connections=8, requests=2000, label="inproc")
        report = blast(spec, db=db, store_mode="requests")
        served = target.stats()["served"]
    finally:
        target.stop()
    return db, report, served


def test_blast_sends_exactly_n_and_stores_the_report(stored_run):
    db, report, served = stored_run
    assert report["requests"] == 2000 == served and report["errors"] == 0
    assert report["status"] == "completed" and report["stop_reason"] == "count"
    conn = store.open_database(db, readonly=True)
    try:
        row = store.find_run(conn, "last")
        rebuilt = report_from_row(row, db)
        rows = list(store.iter_requests(conn, row["id"]))
    finally:
        conn.close()
    assert len(rows) == 2000 and all(r["status_code"] == 200 for r in rows)
    for key in ("requests", "attempts", "successes", "errors", "latency_ms", "status_codes"):
        assert rebuilt[key] == report[key], key
    assert "2,000 completed" in render_text(report)


def invoke(*args):
    return CliRunner().invoke(top_level, list(args), catch_exceptions=False)


def test_runs_show_export_in_process(stored_run):
    db, report, _ = stored_run
    listed = invoke("runs", "--db", str(db), "--json")
    assert listed.exit_code == 0
    [row] = json.loads(listed.output)
    assert row["label"] == "inproc" and row["total_requests"] == 2000
    shown = invoke("show", "last", "--db", str(db), "--json")
    assert shown.exit_code == 0
    data = json.loads(shown.output)
    assert data["requests"] == 2000 and sum(s["requests"] for s in data["seconds"]) == 2000
    exported = invoke("export", "last", "--db", str(db), "--requests", "--format", "csv")
    assert exported.exit_code == 0
    assert len(list(csv.DictReader(io.StringIO(exported.output)))) == 2000


def test_unknown_run_is_one_line_and_exit_1(stored_run):
    db, _, _ = stored_run
    result = invoke("show", "999", "--db", str(db))
    assert result.exit_code == 1
    assert "no run '999'" in result.output and result.output.count("\n") == 1
