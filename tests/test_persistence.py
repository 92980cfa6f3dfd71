"""Persistence end to end: the real CLI in subprocesses, real targets on 127.0.0.1, real SQLite
files.  kill -9 mid-run, backup while a run writes, restore, bad databases, store modes, and
reports rebuilt from what was stored."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest

from conftest import (ROOT, TargetProcess, blast_json, children_of, cli, free_port, is_alive,
                      kill_if_alive, wait_for)
from loadtester import store


# --------------------------------------------------------------------------- helpers

def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def start_blast(url, db, *args, stdout=None):
    """`python -m loadtester blast URL --db DB --no-progress ARGS` in the background."""
    return subprocess.Popen([sys.executable, "-m", "loadtester", "blast", str(url), "--db", str(db),
                             "--no-progress", *map(str, args)],
                            cwd=ROOT, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def reading(db):
    """A connection that never writes (store.open_database(readonly=True): no migration,
    no reaping of interrupted runs)."""
    conn = store.open_database(db, readonly=True)
    try:
        yield conn
    finally:
        conn.close()


def request_rows(conn, run_id) -> int:
    return conn.execute("SELECT coalesce(sum(last_id - first_id + 1), 0) FROM request_batches "
                        "WHERE test_run_id = ?", (run_id,)).get


def window_totals(conn, run_id) -> tuple[int, int]:
    """(number of window rows, sum of their requests)."""
    return conn.execute("SELECT count(*), coalesce(sum(requests), 0) FROM metric_windows "
                        "WHERE test_run_id = ?", (run_id,)).fetchone()


def newest_run_progress(db):
    """(id, status, request rows, window rows) of the newest run, or None while there is none."""
    try:
        with reading(db) as conn:
            row = conn.execute("SELECT id, status FROM test_runs ORDER BY id DESC LIMIT 1").fetchone()
            if row is None:
                return None
            return (row[0], row[1], request_rows(conn, row[0]), window_totals(conn, row[0])[0])
    except (store.StoreError, apsw.Error):
        return None


def wait_until_writing(db, run_number, *, windows=0, timeout_s=15.0):
    """Wait until run `run_number` (1-based count of runs in db) is 'running' with request rows
    (and at least `windows` window rows) committed; returns its id."""
    seen = {}

    def ready():
        progress = newest_run_progress(db)
        if progress is None:
            return False
        run_id, status, rows, n_windows = progress
        seen["last"] = progress
        return run_id == run_number and status == "running" and rows > 0 and n_windows >= windows

    assert wait_for(ready, timeout_s=timeout_s, interval_s=0.1), f"run never wrote rows: {seen}"
    return seen["last"][0]


def runs_json(db, env=None) -> list[dict]:
    result = cli("runs", "--json", "--limit", "100", "--db", db, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def exported_requests(db, ref) -> list[dict]:
    result = cli("export", ref, "--requests", "--format", "ndjson", "--db", db)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_check_ok(db):
    result = cli("db", "check", "--db", db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{db}: ok"


def assert_one_line_failure(result, *fragments):
    """Exit status 1, exactly one line on stderr starting 'loadtester:', no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("loadtester:"), result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def kill_9_mid_run(target, db, log, *, windows=0):
    """Start a 20 s blast, wait until it has committed rows, SIGKILL it about 3 s in.
    Returns the pids of its workers (already gone or going)."""
    started = time.monotonic()
    proc = start_blast(target.url, db, "-d", "20s", "-c", "20", stdout=log)
    workers = []
    try:
        wait_until_writing(db, 1, windows=windows)
        workers = children_of(proc.pid)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
        assert proc.poll() is None, "the 20 s blast ended early"
        assert workers, "the blast forked no worker process"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return workers


# --------------------------------------------------------------------------- 1. kill -9

def test_kill_9_mid_blast_keeps_committed_rows_and_marks_the_run_interrupted(start_target, db, tmp_path):
    target = start_target()
    with open(tmp_path / "blast.log", "w") as log:
        workers = kill_9_mid_run(target, db, log)
    try:
        # PR_SET_PDEATHSIG: the forked worker dies with the killed parent ...
        assert wait_for(lambda: not any(is_alive(p) for p in workers), timeout_s=2.0), \
            f"worker(s) {workers} outlived the killed blast"
    finally:
        kill_if_alive(workers)
    # ... so the target stops being sent load.
    time.sleep(0.2)
    served = target.stats()["served"]
    time.sleep(1.0)
    assert target.stats()["served"] == served, "something still sends load after kill -9"

    runs = runs_json(db)                              # reading shows the dead run interrupted...
    assert [r["status"] for r in runs] == ["interrupted"], runs
    assert_check_ok(db)                               # ...the next writable open records it so
    runs = runs_json(db)
    assert [r["status"] for r in runs] == ["interrupted"], runs
    first = runs[0]
    assert first["completed_at"] and first["total_requests"] and first["total_requests"] > 0
    assert not list(tmp_path.glob(f"{db.name}.run-*.lock")), "the dead run's lock file was left"

    rows = exported_requests(db, "last")
    assert len(rows) > 0
    assert {r["test_run_id"] for r in rows} == {first["id"]}
    # Batches are committed in order: what survived is a gap-free prefix of the run.
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    assert all(r["success"] == 1 and r["status_code"] == 200 for r in rows)
    assert_check_ok(db)

    second = blast_json(target.url, "-n", "2000", "-c", "10", db=db)
    assert second["status"] == "completed" and second["requests"] == 2000
    runs = runs_json(db)
    assert [(r["id"], r["status"]) for r in runs] == [(second["run_id"], "completed"),
                                                      (first["id"], "interrupted")]
    assert runs[1]["uuid"] == first["uuid"]
    with reading(db) as conn:                         # untouched by the next run
        assert request_rows(conn, first["id"]) == len(rows)
    assert_check_ok(db)


def test_show_rebuilds_an_interrupted_run_consistently(start_target, db, tmp_path):
    """`show` of a run killed mid-way: its counts must add up (what the reaper filled in from
    the committed windows), not come out negative."""
    target = start_target()
    with open(tmp_path / "blast.log", "w") as log:
        workers = kill_9_mid_run(target, db, log, windows=1)
    assert wait_for(lambda: not any(is_alive(p) for p in workers), timeout_s=2.0)
    kill_if_alive(workers)
    listed = runs_json(db)[0]
    assert listed["status"] == "interrupted" and listed["total_requests"] > 0

    result = cli("show", "last", "--json", "--db", db)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "interrupted"
    assert report["errors"] >= 0, report
    assert 0 <= report["successes"] <= report["attempts"], report
    assert report["attempts"] == listed["total_requests"], report
    assert sum(s["requests"] for s in report["seconds"]) == listed["total_requests"]


# --------------------------------------------------------------------------- 2. backup / restore

BACKUP_LINE = re.compile(r"^backed up (?P<src>\S+) to (?P<dest>\S+): (?P<size>[\d.]+) (B|KiB|MiB|GiB) "
                         r"in (?P<secs>[\d.]+) s$")


def test_backup_while_a_blast_writes_and_restore(start_target, db, tmp_path):
    target = start_target()
    run_a = blast_json(target.url, "-n", "5000", "-c", "10", db=db)
    assert run_a["status"] == "completed"
    with reading(db) as conn:
        a_rows = request_rows(conn, run_a["run_id"])
        a_windows = window_totals(conn, run_a["run_id"])
    assert a_rows == 5000

    dest = tmp_path / "backups" / "during-b.db"
    dest.parent.mkdir()                               # backup refuses a missing directory
    b_out = open(tmp_path / "b.json", "w")
    started = time.monotonic()
    proc = start_blast(target.url, db, "-d", "6s", "-c", "10", "--json", stdout=b_out)
    try:
        b_id = wait_until_writing(db, 2)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))

        backup = cli("db", "backup", dest, "--db", db)
        assert proc.poll() is None, "run B should still be writing during the backup"
        assert backup.returncode == 0, backup.stderr
        match = BACKUP_LINE.match(backup.stdout.strip())
        assert match, backup.stdout                   # size and time
        assert match["dest"] == str(dest) and float(match["size"]) > 0
        assert dest.stat().st_size > 0

        # A restore while B still holds its run lock is refused, in one line.
        refused = cli("db", "restore", dest, "--db", db)
        assert proc.poll() is None, "run B should still be writing during the restore attempt"
        assert_one_line_failure(refused, "still writing")
        assert not list(tmp_path.glob(f"{db.name}.bak-*"))

        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        b_out.close()
    assert proc.returncode == 0
    run_b = json.loads((tmp_path / "b.json").read_text())
    assert run_b["run_id"] == b_id and run_b["status"] == "completed"

    # The backup: sound, A complete with all of its rows, B caught mid-run as 'running'.
    assert_check_ok(dest)
    with reading(dest) as conn:
        a = store.find_run(conn, run_a["run_id"])
        b = store.find_run(conn, b_id)
        assert a["status"] == "completed" and a["uuid"] == run_a["uuid"]
        assert request_rows(conn, a["id"]) == a_rows
        assert window_totals(conn, a["id"]) == a_windows
        assert b is not None and b["status"] == "running"
        assert request_rows(conn, b_id) <= run_b["attempts"]
        assert conn.execute("PRAGMA journal_mode").get != "wal"      # one self-contained file
    assert not Path(str(dest) + "-wal").exists()

    # B ended: the restore goes through and keeps the old database aside.
    restored = cli("db", "restore", dest, "--db", db)
    assert restored.returncode == 0, restored.stderr
    assert "previous database is kept as" in restored.stdout
    kept = list(tmp_path.glob(f"{db.name}.bak-*"))
    assert len(kept) == 1
    with reading(kept[0]) as conn:                    # the old database, B completed in it
        assert store.find_run(conn, b_id)["status"] == "completed"

    # As store.restore documents: runs the backup caught mid-write are closed out
    # ('interrupted'), since the process writing them is gone.
    runs = {r["id"]: r for r in runs_json(db)}
    assert set(runs) == {run_a["run_id"], b_id}
    assert runs[run_a["run_id"]]["status"] == "completed"
    assert runs[run_a["run_id"]]["total_requests"] == 5000
    assert runs[b_id]["status"] == "interrupted"
    assert len(exported_requests(db, run_a["run_id"])) == 5000
    assert_check_ok(db)


# --------------------------------------------------------------------------- 3. bad databases

@pytest.fixture(scope="module")
def good_db(tmp_path_factory):
    """(target, a real database from a real blast) shared by the bad-database cases."""
    target = TargetProcess()
    try:
        path = tmp_path_factory.mktemp("good") / "good.db"
        report = blast_json(target.url, "-n", "5000", "-c", "10", db=path)
        assert report["status"] == "completed"
        yield target, path
    finally:
        target.stop()


def _copy(good, dest):
    shutil.copyfile(good, dest)
    return dest


def make_corrupt(good, tmp):
    """Garbage over 8 KB from offset 4096: pages 2-3, the test_runs table and its uuid index,
    which every open reads (the schema is created in a fixed order on a fresh file)."""
    with reading(good) as conn:
        assert conn.pragma("page_size") == 4096
        roots = dict(conn.execute("SELECT name, rootpage FROM sqlite_schema"))
    assert roots["test_runs"] == 2 and roots["sqlite_autoindex_test_runs_1"] == 3, roots
    path = _copy(good, tmp / "corrupt.db")
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(bytes((i * 151 + 7) & 0xFF for i in range(8192)))
    return path


def make_future(good, tmp):
    path = _copy(good, tmp / "future.db")
    conn = apsw.Connection(str(path))
    conn.pragma("user_version", 999)
    conn.close()
    assert not Path(str(path) + "-wal").exists()
    return path


def make_text(good, tmp):
    path = tmp / "notes.db"
    path.write_text("these are my notes, not a database\n")
    return path


def make_plain_file(good, tmp):
    path = tmp / "file"
    path.write_text("a regular file where a directory should be\n")
    return path


BAD_CASES = {
    # id: (make the file, its --db path relative to the file, command, expected fragment)
    "blast-corrupt": (make_corrupt, None, ["blast", "{url}", "-n", "10"], "is corrupt"),
    "blast-future-version": (make_future, None, ["blast", "{url}", "-n", "10"], "newer loadtester"),
    "blast-not-a-database": (make_text, None, ["blast", "{url}", "-n", "10"], "not a loadtester database"),
    "blast-uncreatable-dir": (make_plain_file, "x.db", ["blast", "{url}", "-n", "10"], "not a directory"),
    "runs-future-version": (make_future, None, ["runs"], "newer loadtester"),
    "show-future-version": (make_future, None, ["show", "last"], "newer loadtester"),
    "db-stats-future-version": (make_future, None, ["db", "stats"], "newer loadtester"),
    "runs-corrupt": (make_corrupt, None, ["runs"], "is corrupt"),
    "show-corrupt": (make_corrupt, None, ["show", "last"], "is corrupt"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_database_is_refused_in_one_line_and_left_untouched(case, good_db, tmp_path):
    target, good = good_db
    make, below, command, fragment = BAD_CASES[case]
    victim = make(good, tmp_path)
    db_arg = victim / below if below else victim
    before = (sha256(victim), sorted(os.listdir(tmp_path)))
    served = target.stats()["served"]

    result = cli(*[arg.format(url=target.url) for arg in command], "--db", db_arg)

    assert result.returncode != 0, result.stdout
    assert (sha256(victim), sorted(os.listdir(tmp_path))) == before, "the file was touched"
    assert target.stats()["served"] == served, "load was sent before the database was refused"
    assert_one_line_failure(result, fragment)


def test_show_of_a_missing_run_is_one_line(good_db, tmp_path):
    _, good = good_db
    db = _copy(good, tmp_path / "good.db")
    before = sha256(db)
    result = cli("show", "999", "--db", db)
    assert_one_line_failure(result, "no run")
    assert result.stdout == ""
    assert sha256(db) == before


# --------------------------------------------------------------------------- 4. store modes

def test_store_modes_keep_what_they_say(start_target, db):
    target = start_target()
    windows = blast_json(target.url, "-d", "2s", "-c", "10", "--store", "windows", db=db)
    none = blast_json(target.url, "-n", "5000", "-c", "10", "--store", "none", db=db)
    full = blast_json(target.url, "-n", "5000", "-c", "10", db=db)        # --store requests (default)
    errors = blast_json(f"http://127.0.0.1:{free_port()}/", "-n", "50", "-c", "5", db=db,
                        exit_code=1)                  # nothing listens: no response at all
    assert errors["errors_by_kind"] == {"connect": 50}

    with reading(db) as conn:
        modes = dict(conn.execute("SELECT id, store_mode FROM test_runs"))
        assert modes == {windows["run_id"]: "windows", none["run_id"]: "none",
                         full["run_id"]: "requests", errors["run_id"]: "requests"}

        n_windows, window_requests = window_totals(conn, windows["run_id"])
        assert n_windows >= 2 and window_requests == windows["attempts"] > 0
        assert request_rows(conn, windows["run_id"]) == 0

        assert window_totals(conn, none["run_id"]) == (0, 0)
        assert request_rows(conn, none["run_id"]) == 0
        row = store.find_run(conn, none["run_id"])
        assert row["status"] == "completed" and row["total_requests"] == 5000

        assert full["requests"] == 5000 and full["dropped_records"] == 0
        assert request_rows(conn, full["run_id"]) == 5000
        assert window_totals(conn, full["run_id"])[1] == 5000
        stored = list(store.iter_requests(conn, full["run_id"]))
        assert len(stored) == 5000
        assert [r["seq"] for r in stored] == list(range(5000))
        assert all(r["success"] == 1 and r["status_code"] == 200 and r["error"] == 0 for r in stored)

        # Failed attempts are request rows too (with -n each one uses a request).
        failed = list(store.iter_requests(conn, errors["run_id"]))
        assert len(failed) == 50 == window_totals(conn, errors["run_id"])[1]
        assert all(r["error"] == 1 and r["success"] == 0 for r in failed)   # 1 = connect

    result = cli("db", "stats", "--json", "--db", db)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["runs"] == 4 and info["running_runs"] == 0 and info["request_rows"] == 5050


# --------------------------------------------------------------------------- 5. show / export

def nearest_rank(sorted_values, p):
    return sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1]


def test_show_and_export_rebuild_what_blast_printed(start_target, db):
    target = start_target()
    printed = blast_json(target.url, "-n", "5000", "-c", "10", db=db)
    assert printed["requests"] == 5000

    result = cli("show", "last", "--json", "--db", db)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    for key in ("run_id", "uuid", "status", "requests", "attempts", "successes", "errors",
                "status_codes", "errors_by_kind", "bytes", "dropped_records"):
        assert shown[key] == printed[key], key
    assert shown["rps"] == pytest.approx(printed["rps"], rel=1e-9)
    assert shown["duration_s"] == pytest.approx(printed["duration_s"], rel=1e-9)
    for key, value in printed["latency_ms"].items():
        assert shown["latency_ms"][key] == pytest.approx(value, rel=1e-9), key

    # Per-second windows: a header and one line per (possibly partial) second of the run.
    result = cli("export", "last", "--format", "csv", "--db", db)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("second,requests,")
    seconds = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(lines) == 1 + len(seconds)
    assert [int(s["second"]) for s in seconds] == list(range(len(seconds)))
    assert math.floor(printed["duration_s"]) <= len(seconds) <= math.ceil(printed["duration_s"])
    assert sum(int(s["requests"]) for s in seconds) == 5000
    assert [s["second"] for s in shown["seconds"]] == list(range(len(seconds)))

    # Every request row, and percentiles computed exactly from them (nearest rank).
    rows = exported_requests(db, "last")
    assert len(rows) == 5000
    latencies = sorted(r["latency"] for r in rows)                  # µs
    for key, p in (("p50", 50), ("p99", 99)):
        exact_ms = nearest_rank(latencies, p) / 1000
        assert printed["latency_ms"][key] == pytest.approx(exact_ms, rel=0.01), (key, exact_ms)
    assert printed["latency_ms"]["max"] == pytest.approx(latencies[-1] / 1000, rel=0.01)


# --------------------------------------------------------------------------- 6. DB_PATH

def test_db_path_environment_variable_places_the_database(start_target, tmp_path):
    target = start_target()
    path = tmp_path / "envdir" / "x.db"
    env = {"DB_PATH": str(path)}
    result = cli("blast", target.url, "-n", "500", "-c", "5", "--json", "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["db"] == str(path)
    assert path.parent.is_dir() and path.is_file()

    result = cli("runs", "--json", env=env)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [(r["uuid"], r["status"], r["total_requests"]) for r in runs] == \
        [(report["uuid"], "completed", 500)]
