"""merge: shards in separate database files become one run, exactly."""
from __future__ import annotations

import json
import math
import shutil

import click
import pytest
from click.testing import CliRunner

from conftest import TargetProcess, blast_json, cli
from loadtester import _engine, store
from loadtester.analysis import merge
from loadtester.cli import analysis as analysis_cli


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shard databases of one run group, from two real blasts of the same target."""
    base = tmp_path_factory.mktemp("merge")
    a_db, b_db = base / "a.db", base / "b.db"
    target = TargetProcess("--delay", "1ms")
    common = ("-n", "5000", "-c", "16", "--run-id", "g1", "--label", "shards", "--no-progress")
    try:
        a = blast_json(target.url, *common, "--shard", "0/2", db=a_db)
        b = blast_json(target.url, *common, "--shard", "1/2", "--workers", "2", db=b_db)
    finally:
        target.stop()
    assert a["requests"] == b["requests"] == 2500
    for path, shard in ((a_db, "0/2"), (b_db, "1/2")):
        row = _only_run(path)                     # blast stores its group and shard
        assert (row["run_group"], row["shard"]) == ("g1", shard)
    return {"dir": base, "a": a_db, "b": b_db, "reports": (a, b),
            "rows_before": {name: _only_run(path) for name, path in (("a", a_db), ("b", b_db))}}


def _only_run(path) -> dict:
    conn = store.open_database(path, readonly=True)
    try:
        return store.find_run(conn, "last")
    finally:
        conn.close()


def _hist(blob):
    return _engine.Histogram.from_bytes(bytes(blob))


def _nearest_rank(sorted_values, p):
    return sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1]


@pytest.fixture(scope="module")
def merged(shards):
    into = shards["dir"] / "all.db"
    result = merge.merge([shards["a"], shards["b"]], into)
    return {"into": into, "result": result}


def test_merged_totals_are_the_sums(shards, merged):
    (m,) = merged["result"]["merged"]
    assert m["group"] == "g1" and m["group_kind"] == "run_group" and not m["already_merged"]
    ra, rb = _only_run(shards["a"]), _only_run(shards["b"])
    run = _only_run(merged["into"])
    assert run["id"] == m["run_id"]
    assert run["total_requests"] == ra["total_requests"] + rb["total_requests"] == 5000
    assert run["success_count"] == ra["success_count"] + rb["success_count"]
    assert run["bytes"] == ra["bytes"] + rb["bytes"]
    # each shard's row holds the whole run's -c 16 and -n 5000; workers add up (1 + 2)
    assert run["total_users"] == 16 and run["workers"] == 3
    assert run["status"] == "completed" and run["requests_limit"] == 5000
    assert run["run_group"] == "g1" and run["shard"] is None
    assert run["started_at"] == min(ra["started_at"], rb["started_at"])
    assert run["completed_at"] == max(ra["completed_at"], rb["completed_at"])
    longest = max(ra["measured_duration"], rb["measured_duration"])
    assert run["measured_duration"] == pytest.approx(longest)
    assert run["rps"] == pytest.approx(5000 / longest)
    assert json.loads(run["status_codes"]) == {"200": 5000}


def test_merged_histogram_is_the_exact_merge(shards, merged):
    ra, rb, run = _only_run(shards["a"]), _only_run(shards["b"]), _only_run(merged["into"])
    expected = _hist(ra["latency_hist"])
    expected.merge(_hist(rb["latency_hist"]))
    got = _hist(run["latency_hist"])
    assert got.total == expected.total == 5000
    assert (got.min_us, got.max_us) == (expected.min_us, expected.max_us)
    for p in (50, 75, 90, 99, 99.9, 100):
        assert got.value_at_percentile(p) == expected.value_at_percentile(p)
    assert run["p50"] == expected.value_at_percentile(50) / 1000
    assert run["p99"] == expected.value_at_percentile(99) / 1000
    service = _hist(ra["service_hist"])
    service.merge(_hist(rb["service_hist"]))
    assert _hist(run["service_hist"]).value_at_percentile(99) == service.value_at_percentile(99)


def test_merged_request_rows_match_the_histogram(merged):
    conn = store.open_database(merged["into"], readonly=True)
    try:
        run = store.find_run(conn, "last")
        rows = list(store.iter_requests(conn, run["id"]))
    finally:
        conn.close()
    assert len(rows) == 5000
    assert [r["seq"] for r in rows] == list(range(5000))
    latencies = sorted(r["latency"] for r in rows)
    for p, column in ((50, "p50"), (99, "p99")):
        exact_ms = _nearest_rank(latencies, p) / 1000
        assert run[column] == pytest.approx(exact_ms, rel=0.01)
    # "two shards merged" == "one run of the same total": one histogram of every row
    whole = _engine.Histogram()
    for value in latencies:
        whole.record_value(value)
    merged_hist = _hist(run["latency_hist"])
    assert whole.total == merged_hist.total == run["total_requests"]
    for p in (50, 90, 99, 99.9):
        assert merged_hist.value_at_percentile(p) == pytest.approx(whole.value_at_percentile(p), rel=0.01)
    # workers renumbered densely: a's worker 0 -> 0, b's workers 0, 1 -> 1, 2
    by_worker = {}
    for r in rows:
        by_worker[r["worker"]] = by_worker.get(r["worker"], 0) + 1
    assert sorted(by_worker) == [0, 1, 2] and by_worker[0] == 2500
    assert by_worker[1] + by_worker[2] == 2500


def test_merged_windows(shards, merged):
    conn = store.open_database(merged["into"], readonly=True)
    try:
        run = store.find_run(conn, "last")
        windows = store.run_windows(conn, run["id"])
    finally:
        conn.close()
    assert sum(w["requests"] for w in windows) == 5000
    assert {w["worker"] for w in windows} == {0, 1, 2}
    (m,) = merged["result"]["merged"]
    parts = m["parts"]
    assert [p["shard"] for p in parts] == ["0/2", "1/2"]
    assert [p["worker_offset"] for p in parts] == [0, 1]
    assert parts[0]["time_offset_s"] == 0 and parts[1]["time_offset_s"] > 0
    assert m["request_rows"] == 5000 and m["windows"] == len(windows)
    assert store.check(merged["into"]) == ["ok"]


def test_merge_again_adds_nothing(shards, merged):
    again = merge.merge([shards["a"], shards["b"]], merged["into"])
    (m,) = again["merged"]
    assert m["already_merged"] and m["run_id"] == merged["result"]["merged"][0]["run_id"]
    conn = store.open_database(merged["into"], readonly=True)
    assert conn.execute("SELECT count(*) FROM test_runs").get == 1
    conn.close()


def test_refuses_to_merge_into_a_source(shards):
    with pytest.raises(merge.MergeError) as info:
        merge.merge_databases([shards["a"], shards["b"]], shards["b"])
    assert "is one of the sources" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, store.StoreError)


def _copy(shards, name, dest, sql):
    shutil.copyfile(shards[name], dest)
    conn = store.open_database(dest)
    conn.execute(sql)
    conn.close()
    return dest


def test_run_group_from_the_stored_config(shards, tmp_path):
    # A database whose blast kept --run-id/--shard only in the config JSON (no columns)
    copies = [_copy(shards, n, tmp_path / f"{n}.db", "UPDATE test_runs SET run_group = NULL, shard = NULL")
              for n in ("a", "b")]
    result = merge.merge(copies, tmp_path / "cfg.db")
    (m,) = result["merged"]
    assert (m["group"], m["group_kind"], m["status"]) == ("g1", "run_group", "completed")
    assert [p["shard"] for p in m["parts"]] == ["0/2", "1/2"]


def test_group_selection_and_label_fallback(shards, tmp_path):
    # Copies of the shards with no run group or shard at all: with by_label, grouped by their
    # shared label and counted as separate runs (their connections add up).
    copies = [_copy(shards, n, tmp_path / f"{n}-copy.db",
                    "UPDATE test_runs SET run_group = NULL, shard = NULL, "
                    "config = json_remove(config, '$.run_id', '$.shard')")
              for n in ("a", "b")]
    plain = merge.merge(copies, tmp_path / "not-by-label.db")      # not shards: left alone, said why
    assert plain["merged"] == [] and len(plain["ignored"]) == 2
    assert all("share its label 'shards'" in r["reason"] for r in plain["ignored"])
    ids = merge.merge_databases(copies, tmp_path / "by-label.db", by_label=True)
    assert len(ids) == 1
    run = _only_run(tmp_path / "by-label.db")
    assert run["total_requests"] == 5000 and run["label"] == "shards" and run["run_group"] is None
    assert run["total_users"] == 32 and run["requests_limit"] == 10000
    # --group picks one group out of several
    with pytest.raises(merge.MergeError, match="no run with run group or label 'nope'"):
        merge.merge(copies, tmp_path / "x.db", group="nope", by_label=True)
    ids = merge.merge_databases([shards["a"], shards["b"], *copies], tmp_path / "one.db", group="g1")
    assert len(ids) == 1 and _only_run(tmp_path / "one.db")["run_group"] == "g1"


def test_missing_shard_is_not_completed(shards, tmp_path):
    result = merge.merge([shards["a"]], tmp_path / "half.db")
    (m,) = result["merged"]
    assert m["status"] == "interrupted"
    assert any("1/2 missing" in note for note in m["notes"])
    run = _only_run(tmp_path / "half.db")
    assert run["total_requests"] == 2500 and run["stop_reason"].startswith("merged 1 of 2 shards")


def test_merge_command(shards, tmp_path):
    @click.group()
    def group():
        pass

    analysis_cli.register(group)
    runner = CliRunner()
    into = tmp_path / "cli.db"
    res = runner.invoke(group, ["merge", str(shards["a"]), str(shards["b"]), "--into", str(into), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["merged"][0]["requests"] == 5000
    res = runner.invoke(group, ["merge", str(shards["a"]), str(shards["b"]), "--into", str(into)])
    assert res.exit_code == 0 and "already merged as run" in res.output
    res = runner.invoke(group, ["merge", str(shards["a"]), "--into", str(shards["a"])])
    assert res.exit_code == 1
    assert res.output.startswith("loadtester: ") and res.output.count("\n") == 1
    res = runner.invoke(group, ["merge", str(tmp_path / "absent.db"), "--into", str(tmp_path / "y.db")])
    assert res.exit_code == 1 and "loadtester: no database at" in res.output
    res = runner.invoke(group, ["merge", str(shards["a"])])
    assert res.exit_code == 2                              # --into is required


def test_merge_through_the_real_cli(shards, tmp_path):
    into = tmp_path / "real.db"
    result = cli("merge", shards["a"], shards["b"], "--into", into)
    assert result.returncode == 0, result.stderr
    assert "group 'g1': 2 run(s) -> run 1" in result.stdout
    assert _only_run(into)["total_requests"] == 5000


def test_source_files_are_untouched(shards, merged):
    # opened read-only: the merge leaves the sources as they were
    for name in ("a", "b"):
        assert _only_run(shards[name]) == shards["rows_before"][name]
