"""compare: Mann-Whitney units, and real runs against 10 ms and 20 ms targets."""
from __future__ import annotations

import concurrent.futures
import json
import math

import click
import pytest
from click.testing import CliRunner

from conftest import TargetProcess, blast_json, cli
from loadtester import store
from loadtester.analysis import compare
from loadtester.cli import analysis as analysis_cli

RUN_ARGS = ("-d", "8s", "-c", "10", "--no-progress")   # 8 windows, 6 after trimming


# --------------------------------------------------------------------------- statistics

def test_mann_whitney_separated_samples():
    result = compare.mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert result["u"] == 0
    # z = (|0 - 4.5| - 0.5) / sqrt(3*3*7/12); p = erfc(z / sqrt 2)  (scipy: 0.0809)
    z = 4.0 / math.sqrt(63 / 12)
    assert result["p"] == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert result["p"] == pytest.approx(0.0809, abs=5e-4)
    assert result["z"] < 0


def test_mann_whitney_symmetry_ties_and_degenerate():
    x, y = [10, 11, 11, 12, 13, 13, 13, 15], [12, 14, 14, 15, 16, 18, 18, 19]
    a, b = compare.mann_whitney_u(x, y), compare.mann_whitney_u(y, x)
    assert a["p"] == pytest.approx(b["p"])
    assert a["u"] + b["u"] == len(x) * len(y)
    assert 0 < a["p"] < 0.05
    assert compare.mann_whitney_u([5, 5, 5], [5, 5, 5])["p"] == 1.0
    assert compare.mann_whitney_u([], [1, 2])["p"] == 1.0
    # ties lower the variance: the tied version is at least as significant
    assert compare.mann_whitney_u([1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2])["p"] < \
        compare.mann_whitney_u([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])["p"] < 0.01


def _result(a: dict, b: dict, error_rate_diff=0.0, url_b="http://x/"):
    metrics = ("rps", "p50", "p95", "p99")
    return {"a": {"url": "http://x/", **a}, "b": {"url": url_b, **b},
            "change": {m: compare.relative_change(a.get(m), b.get(m)) for m in metrics},
            "error_rate_diff": error_rate_diff}


def test_plain_summary_names_what_moved_and_is_mixed_when_latency_got_worse():
    base = {"rps": 1000.0, "p50": 10.0, "p95": 20.0, "p99": 40.0}
    mixed = compare.plain_summary(_result(base, {"rps": 1790.0, "p50": 10.1, "p95": 20.0, "p99": 62.8}))
    assert mixed["text"] == "throughput +79%, p99 +57%: mixed" and mixed["tone"] == "mixed"
    assert (mixed["better"], mixed["worse"]) == (["throughput"], ["p99"])
    # never an improvement while a headline latency got worse (p95 counts too)
    assert compare.plain_summary(_result(base, {**base, "rps": 2000.0, "p95": 23.0}))["tone"] == "mixed"
    better = compare.plain_summary(_result(base, {**base, "rps": 1500.0, "p50": 8.0}))
    assert better == {"text": "throughput +50%, p50 -20%: improvement", "tone": "improvement",
                      "better": ["throughput", "p50"], "worse": []}
    worse = compare.plain_summary(_result(base, base, error_rate_diff=0.05))
    assert worse["text"] == "errors +5.0 pp: regression" and worse["tone"] == "regression"
    same = compare.plain_summary(_result(base, {**base, "rps": 1040.0}))
    assert same["tone"] == "no notable change" and same["text"].startswith("no notable change")
    other = compare.plain_summary(_result(base, {**base, "rps": 5000.0}, url_b="http://y/"))
    assert other["tone"] == "different targets" and "no verdict" in other["text"]


def test_relative_change():
    assert compare.relative_change(10, 15) == pytest.approx(0.5)
    assert compare.relative_change(0, 5) is None and compare.relative_change(None, 1) is None


# --------------------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A (10 ms target) and run B (20 ms target) side by side, then A2 (10 ms again)."""
    db = tmp_path_factory.mktemp("compare") / "runs.db"
    # Created first: two processes creating one new database at the same moment can trip
    # over each other's journal_mode=WAL switch (store.open_database, not ours to fix here).
    store.open_database(db).close()
    fast, slow = TargetProcess("--delay", "10ms"), TargetProcess("--delay", "20ms")
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            a = pool.submit(blast_json, fast.url, *RUN_ARGS, "--label", "fast", db=db)
            b = pool.submit(blast_json, slow.url, *RUN_ARGS, "--label", "slow", db=db)
            report_a, report_b = a.result(), b.result()
        report_a2 = blast_json(fast.url, *RUN_ARGS, "--label", "fast-again", db=db)
    finally:
        fast.stop()
        slow.stop()
    return {"db": db, "a": report_a["run_id"], "b": report_b["run_id"], "a2": report_a2["run_id"]}


def _compare(runs, x, y):
    conn = store.open_database(runs["db"], readonly=True)
    try:
        return compare.compare_runs(conn, store.find_run(conn, runs[x]), store.find_run(conn, runs[y]))
    finally:
        conn.close()


def test_slower_target_is_a_regression(runs):
    result = _compare(runs, "a", "b")
    assert result["verdict"] == "regression", result["explanation"]
    lat = result["tests"]["latency"]
    assert lat["significant"] and lat["direction"] == "regression" and lat["p"] < 0.01
    assert lat["windows_a"] == lat["windows_b"] == 6
    assert result["change"]["p50"] > 0.5 and result["change"]["rps"] < -0.3
    assert result["tests"]["rps"]["direction"] == "regression"
    assert result["explanation"].startswith("verdict from 6 vs 6 per-second windows")
    assert "Mann-Whitney p=" in result["explanation"] and "median p50 +" in result["explanation"]
    assert result["a"]["rps"] > 0 and result["b"]["p99"] > result["a"]["p99"]


def test_faster_target_is_an_improvement(runs):
    result = _compare(runs, "b", "a")
    assert result["verdict"] == "improvement", result["explanation"]
    assert result["change"]["p50"] < -0.3
    assert "median p50 -" in result["explanation"]


def test_same_target_is_no_significant_change(runs):
    result = _compare(runs, "a", "a2")
    assert result["verdict"] == "no significant change", result["explanation"]
    assert abs(result["change"]["p50"]) < 0.05


def test_too_few_windows_is_inconclusive(start_target, db):
    target = start_target("--delay", "5ms")
    ids = [blast_json(target.url, "-n", "200", "-c", "5", "--no-progress", db=db)["run_id"]
           for _ in range(2)]
    conn = store.open_database(db, readonly=True)
    try:
        result = compare.compare_runs(conn, store.find_run(conn, ids[0]), store.find_run(conn, ids[1]))
    finally:
        conn.close()
    assert result["verdict"] == "inconclusive"
    assert "too few per-second windows" in result["explanation"]


# --------------------------------------------------------------------------- the commands

@pytest.fixture
def invoke():
    @click.group()
    def group():
        pass

    analysis_cli.register(group)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(group, [str(a) for a in args])
    return run


def test_compare_command_text_and_json(runs, invoke):
    res = invoke("compare", runs["a"], runs["b"], "--db", runs["db"])
    assert res.exit_code == 0, res.output
    assert "Verdict      regression" in res.output
    assert "A: run" in res.output and "(fast)" in res.output and "(slow)" in res.output
    res = invoke("compare", runs["b"], runs["a"], "--db", runs["db"], "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["verdict"] == "improvement" and data["a"]["run_id"] == runs["b"]


def test_compare_command_last_and_last_1(runs, invoke):
    conn = store.open_database(runs["db"], readonly=True)
    newest = [r["id"] for r in store.list_runs(conn, limit=2)]
    conn.close()
    res = invoke("compare", "last~1", "last", "--db", runs["db"], "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [data["a"]["run_id"], data["b"]["run_id"]] == [newest[1], newest[0]]


def test_compare_command_errors(runs, invoke, tmp_path):
    res = invoke("compare", "999", "last", "--db", runs["db"])
    assert res.exit_code == 1
    assert res.output.strip().startswith("loadtester: no run '999'") and res.output.count("\n") == 1
    res = invoke("compare", "last~50", "last", "--db", runs["db"])
    assert res.exit_code == 1 and "loadtester: no run 'last~50'" in res.output
    res = invoke("compare", "1", "2", "--db", tmp_path / "absent.db")
    assert res.exit_code == 1 and "loadtester: no database at" in res.output
    res = invoke("compare", "1")
    assert res.exit_code == 2


def test_compare_through_the_real_cli(runs):
    result = cli("compare", runs["a"], runs["b"], "--db", runs["db"], "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "regression"
    result = cli("compare", "999", "1", "--db", runs["db"])
    assert result.returncode == 1 and result.stderr.startswith("loadtester: no run")


def test_compare_notes_runs_that_sent_different_bodies(start_target, db):
    # a run keeps no body, only its size and sha256: enough to tell two runs apart
    target = start_target()
    ids = [blast_json(target.url, "-n", "50", "-c", "2", "-m", "POST", "--body", body, db=db)["run_id"]
           for body in ('{"a": 1}', '{"a": 2}', '{"a": 2}')]
    conn = store.open_database(db, readonly=True)
    try:
        def notes(x, y):
            return compare.compare_runs(conn, store.find_run(conn, x), store.find_run(conn, y))["notes"]
        different = "the runs sent different request bodies (their sha256 differ)"
        assert different in notes(ids[0], ids[1]) and different not in notes(ids[1], ids[2])
    finally:
        conn.close()
