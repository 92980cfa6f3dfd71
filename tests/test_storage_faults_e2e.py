"""Storage under faults (issue 12), end to end: a blast killed with SIGKILL while the
generator saturates its core, and a disk that fills during a blast.  Real servers on
127.0.0.1, real processes, a real filesystem (a tmpfs mounted here: CI runs as root)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, children_of, is_alive, kill_if_alive, wait_for
from loadtester import store
from loadtester.store import open_database
from loadtester.store.spool import spool_files
from test_storage_faults import assert_one_line, fill, run_cli, snapshot, stored_rows, tmpfs

pytestmark = pytest.mark.slow

# --------------------------------------------------------------------------- end to end

def start_pinned_target(core):
    proc = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-m", "loadtester", "target",
                             "--port", "0", "--lifetime", "120s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not match:
        proc.kill()
        raise AssertionError(f"target did not start: {line!r} {proc.stderr.read()}")
    return proc, match.group(0)


def served(url) -> int:
    from loadtester.localtarget import fetch_stats
    return fetch_stats(url)["served"]


# The engine keeps up to 8,192 rows per worker in memory before it hands a buffer over (and
# flushes it with each window): those are lost on kill -9 whatever the store does.  Killing
# once the target has served this many makes 1% cover that buffer.
KILL_AFTER_SERVED = 1_000_000


def test_kill_9_of_a_saturated_blast_keeps_99_percent(tmp_path):
    assert shutil.which("taskset"), "this test needs taskset (util-linux)"
    assert (os.cpu_count() or 1) >= 2, "this test pins the target and the generator to two cores"
    db = tmp_path / "sat.db"
    target, url = start_pinned_target(0)
    workers = []
    try:
        blast = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "loadtester", "blast", url,
                                  "-c", "50", "-d", "20s", "--db", str(db), "--no-progress"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        started = time.monotonic()
        while time.monotonic() - started < 17:
            time.sleep(0.2)
            workers = workers or children_of(blast.pid)
            if time.monotonic() - started >= 5 and served(url) >= KILL_AFTER_SERVED:
                break
        assert blast.poll() is None, blast.stderr.read().decode()
        blast.send_signal(signal.SIGKILL)
        killed_at = time.monotonic() - started
        blast.wait(timeout=10)
        assert wait_for(lambda: not any(is_alive(p) for p in workers), timeout_s=2.0)
        n_served = served(url)
    finally:
        kill_if_alive(workers)
        target.terminate()
        target.wait(timeout=10)
    assert len(spool_files(db)) == 1                   # what the writer had not stored yet

    # Before any writable open: read-only commands show the run interrupted, from what is stored.
    listed = json.loads(run_cli("runs", "--json", "--db", db).stdout)
    assert [r["status"] for r in listed] == ["interrupted"]
    shown = json.loads(run_cli("show", "last", "--json", "--db", db).stdout)
    assert shown["status"] == "interrupted" and "partial" in shown
    assert len(spool_files(db)) == 1

    check = run_cli("db", "check", "--db", db)          # the next open: stores the spool
    assert check.returncode == 0 and check.stdout.strip() == f"{db}: ok", check.stdout + check.stderr
    assert not spool_files(db) and not list(tmp_path.glob("*.lock"))
    conn = open_database(db, readonly=True)
    run = store.find_run(conn, "last")
    rows = conn.execute("SELECT coalesce(sum(last_id - first_id + 1), 0) FROM request_batches").get
    windows = store.run_windows(conn, run["id"])
    conn.close()
    rate = n_served / killed_at
    print(f"\nkill -9 at {killed_at:.1f} s: {rows:,} request rows stored of {n_served:,} served "
          f"({100 * rows / n_served:.2f}%), {n_served - rows:,} lost = {1000 * (n_served - rows) / rate:.0f} ms "
          f"of load at {rate:,.0f} req/s; {len(windows)} windows")
    assert rows >= 0.99 * n_served
    assert run["status"] == "interrupted" and run["total_requests"] > 0
    assert len({w["second"] for w in windows}) >= int(killed_at) - 2

    shown = json.loads(run_cli("show", "last", "--json", "--db", db).stdout)
    assert shown["status"] == "interrupted" and shown["partial"]["from"] == "windows"
    assert shown["attempts"] == run["total_requests"] == sum(s["requests"] for s in shown["seconds"])
    assert shown["attempts"] <= rows                   # windows: whole seconds; rows: up to the kill
    text = run_cli("runs", "--db", db).stdout
    assert re.search(r"\s+interrupted$", text.splitlines()[1]), text


def test_a_disk_that_fills_during_a_blast(tmp_path):
    with tmpfs(tmp_path / "small", "2m") as small:
        db = small / "s.db"
        target, url = start_pinned_target(0)
        try:
            first = run_cli("blast", url, "-n", "2000", "-c", "10", "--json", "--no-progress", "--db", db)
            assert first.returncode == 0, first.stderr
            earlier = json.loads(first.stdout)
            blast = run_cli("blast", url, "-d", "4s", "-c", "50", "--no-progress", "--db", db)
            filler = fill(small)
            n_served = served(url)                     # a blast onto a disk already full:
            refused = run_cli("blast", url, "-n", "100", "--no-progress", "--db", db)
            assert_one_line(refused, 1, f"{db}", "disk full")
            assert served(url) == n_served             # refused before any load was sent
        finally:
            target.terminate()
            target.wait(timeout=10)
        # The in-memory report is printed anyway, says what was not stored, exit 1.
        assert blast.returncode == 1, blast.stdout + blast.stderr
        assert "Traceback" not in blast.stderr
        out = blast.stdout
        completed = int(re.search(r"Requests\s+([\d,]+) completed", out).group(1).replace(",", ""))
        match = re.search(r"Not stored\s+([\d,]+) request rows and ([\d,]+) windows \(disk full\)", out)
        assert match, out
        not_stored = int(match.group(1).replace(",", ""))
        assert completed > 50_000 and 0 < not_stored < completed
        spooled = re.search(r"([\d,]+) of those rows wait in (\S+): the next open stores them", out)
        print(f"\ndisk full: {completed:,} requests, {not_stored:,} rows not stored "
              f"({100 * not_stored / completed:.1f}%), {spooled.group(1) if spooled else 0} in the spool")

        # While the disk stays full: reading commands work, and write nothing.
        before = snapshot(small)
        listed = json.loads(run_cli("runs", "--json", "--db", db).stdout)
        assert [(r["id"], r["status"]) for r in listed] == [(2, "failed"), (1, "completed")]
        shown = run_cli("show", "2", "--db", db)
        assert shown.returncode == 0 and f"{completed:,} completed" in shown.stdout, shown.stderr
        assert "store failed: disk full" in shown.stdout
        exported = run_cli("export", "1", "--requests", "--format", "ndjson", "--db", db)
        assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 2000, exported.stderr
        onto_full = run_cli("export", "1", "--requests", "-o", small / "x.csv", "--db", db)
        assert_one_line(onto_full, 1, "disk full")
        assert snapshot(small) == before, "a reading command wrote to the full disk"
        check = run_cli("db", "check", "--db", db)   # (it tries to store the spool: no room yet)
        assert check.returncode == 0 and check.stdout.strip() == f"{db}: ok", check.stdout + check.stderr
        assert bool(spool_files(db)) == bool(spooled)  # kept while there is no room

        # Space is back: the next writable open stores what the spool kept; run 2 is not running.
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        migrate = run_cli("db", "migrate", "--db", db)
        assert migrate.returncode == 0, migrate.stderr
        assert not spool_files(db) and not list(small.glob("*.lock"))
        assert_check = run_cli("db", "check", "--db", db)
        assert assert_check.returncode == 0 and assert_check.stdout.strip() == f"{db}: ok"
        conn = open_database(db, readonly=True)
        try:
            runs = {r["id"]: r for r in store.list_runs(conn)}
            assert runs[2]["status"] == "failed" and runs[2]["total_requests"] == completed
            assert runs[1]["status"] == "completed" and runs[1]["total_requests"] == earlier["attempts"]
            rows_2 = conn.execute("SELECT coalesce(sum(last_id - first_id + 1), 0) FROM request_batches "
                                  "WHERE test_run_id = 2").get
            assert rows_2 + runs[2]["dropped_records"] == completed
        finally:
            conn.close()
        assert stored_rows(db, 1) == 2000
