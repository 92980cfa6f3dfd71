"""The SQLite store: real files in tmp_path, real processes, no mocks."""
from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import apsw
import pytest

from conftest import ROOT, read_only_dirs_are_enforced, wait_for
from loadtester import store
from loadtester.model import RECORD_FORMAT
from loadtester.store import RunWriter, StoreError, open_database
from loadtester.store import maintenance
from loadtester.store.migrations import migration_files

REC = struct.Struct(RECORD_FORMAT)


def records(n, *, start=0, step_us=50, latency=1000, wait=0, nbytes=200, status=200, error=0,
            worker=0) -> bytes:
    """n packed engine records."""
    return b"".join(REC.pack(start + i * step_us, latency + i % 7, wait, nbytes, status, error, worker)
                    for i in range(n))


def window(second, worker=0, responses=10, successes=9, errors=(0, 1, 0, 0, 0, 0)):
    return {"worker": worker, "second": second,
            "counters": {"responses": responses, "successes": successes, "bytes": 100 * responses,
                         "errors": list(errors), "status": {200: successes, 503: responses - successes},
                         "max_wait_us": 7},
            "latency": b"L" * 16, "service": b"S" * 16, "loop_lag_us": 12, "in_flight": 3,
            "partial": False}


def run_row(**extra):
    row = {"url": "http://127.0.0.1:8080/", "host": "127.0.0.1", "method": "GET", "mode": "closed",
           "total_users": 4, "workers": 1, "duration": 1.0, "headers": {"X-A": "1"}}
    row.update(extra)
    return row


def write_run(db, blobs=(), windows=(), status="completed", **extra):
    writer = RunWriter(db)
    run_id, run_uuid = writer.begin(run_row(**extra))
    for blob in blobs:
        writer.submit_records(blob)
    for w in windows:
        writer.submit_window(w)
    writer.finish({"total_requests": sum(len(b) // 24 for b in blobs)}, status=status)
    return run_id, run_uuid, writer


def file_bytes(path):
    return pathlib.Path(path).read_bytes()


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------- opening

def test_new_database_is_created_migrated_and_configured(tmp_path):
    db = tmp_path / "nested" / "dir" / "loadtest.db"
    conn = open_database(db)
    try:
        assert db.exists()
        assert conn.pragma("user_version") == store.SCHEMA_VERSION
        assert conn.pragma("application_id") == store.APPLICATION_ID
        assert conn.pragma("journal_mode") == "wal"
        assert conn.pragma("synchronous") == 1          # NORMAL
        assert conn.pragma("foreign_keys") == 1
        assert conn.pragma("busy_timeout") == 5000
        assert conn.pragma("journal_size_limit") == store.JOURNAL_SIZE_LIMIT
        names = {name for name, in conn.execute("SELECT name FROM sqlite_schema")}
        assert {"test_runs", "metric_windows", "request_records", "request_batches",
                "request_metrics", "request_metrics_ms", "idx_test_runs_started_at"} <= names
    finally:
        conn.close()
    # Opening again is a no-op for the schema.
    conn = open_database(db)
    assert conn.pragma("user_version") == store.SCHEMA_VERSION
    conn.close()


def test_migrations_are_packaged_and_linked_from_top_level_schema():
    migrations = migration_files()
    assert [v for v, _, _ in migrations] == list(range(1, store.SCHEMA_VERSION + 1))
    top = ROOT / "schema"
    assert top.is_symlink() and top.resolve() == (ROOT / "loadtester" / "store" / "schema").resolve()
    assert (top / "001_init.sql").read_text() == migrations[0][2]


def test_resolve_db_path(monkeypatch):
    monkeypatch.delenv("DB_PATH", raising=False)
    assert store.resolve_db_path(None) == pathlib.Path("data/loadtest.db")
    monkeypatch.setenv("DB_PATH", "/env/x.db")
    assert store.resolve_db_path(None) == pathlib.Path("/env/x.db")
    assert store.resolve_db_path("cli.db") == pathlib.Path("cli.db")
    monkeypatch.setenv("DB_PATH", "")
    assert store.resolve_db_path(None) == pathlib.Path("data/loadtest.db")


def test_newer_schema_is_refused_and_left_byte_identical(tmp_path):
    db = tmp_path / "newer.db"
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE test_runs (id INTEGER PRIMARY KEY, future TEXT)")
    conn.pragma("application_id", store.APPLICATION_ID)
    conn.pragma("user_version", 99)
    conn.close()
    before = file_bytes(db)
    with pytest.raises(StoreError) as exc:
        open_database(db)
    assert f"newer loadtester (schema 99 > {store.SCHEMA_VERSION}); upgrade loadtester" in one_line(exc)
    with pytest.raises(StoreError):
        open_database(db, readonly=True)
    assert file_bytes(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newer.db"]


def test_newer_schema_in_uncheckpointed_wal_is_refused(tmp_path):
    db = tmp_path / "newer-wal.db"
    open_database(db).close()
    writer = apsw.Connection(str(db))                 # keep it open: the change stays in the -wal
    writer.wal_autocheckpoint(0)
    writer.pragma("user_version", 42)
    with pytest.raises(StoreError, match=r"schema 42 > "):
        open_database(db)
    writer.close()


@pytest.mark.parametrize("content", [b"hello, this is a text file\n" * 50, b"\x00" * 10, b"SQLite format 3\x00"])
def test_non_sqlite_file_is_refused_and_untouched(tmp_path, content):
    db = tmp_path / "notes.db"
    db.write_bytes(content)
    with pytest.raises(StoreError) as exc:
        open_database(db)
    assert "not a loadtester database (not an SQLite file)" in one_line(exc)
    assert file_bytes(db) == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_foreign_sqlite_files_are_refused_and_untouched(tmp_path):
    other_app = tmp_path / "other.db"
    conn = apsw.Connection(str(other_app))
    conn.pragma("application_id", 0x12345678)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    no_app_id = tmp_path / "pipeops.db"               # e.g. a PipeOps database: tables, no id
    conn = apsw.Connection(str(no_app_id))
    conn.execute("CREATE TABLE test_runs (id INTEGER PRIMARY KEY, uuid TEXT)")
    conn.close()
    for db, expected in ((other_app, "application_id 0x12345678"), (no_app_id, "has tables but no")):
        before = file_bytes(db)
        with pytest.raises(StoreError) as exc:
            open_database(db)
        assert expected in one_line(exc) and "not a loadtester database" in str(exc.value)
        assert file_bytes(db) == before


def test_empty_file_becomes_a_database(tmp_path):
    db = tmp_path / "empty.db"
    db.touch()
    conn = open_database(db)
    assert conn.pragma("user_version") == store.SCHEMA_VERSION
    conn.close()


def test_missing_database_without_create(tmp_path):
    with pytest.raises(StoreError, match="no database at"):
        open_database(tmp_path / "nope.db", create=False)
    with pytest.raises(StoreError, match="no database at"):
        open_database(tmp_path / "nope.db", readonly=True)
    assert not (tmp_path / "nope.db").exists()


def _corrupt(db: pathlib.Path, start: int, length: int) -> None:
    rnd = random.Random(7)
    with open(db, "r+b") as f:
        f.seek(start)
        f.write(bytes(rnd.randrange(256) for _ in range(length)))


def test_corrupt_core_is_refused_with_one_line_and_untouched(tmp_path):
    db = tmp_path / "corrupt.db"
    for i in range(3):
        write_run(db, blobs=[records(500)], windows=[window(0)], label=f"run {i}")
    size = db.stat().st_size
    assert not (tmp_path / "corrupt.db-wal").exists()
    # Garbage over the middle of the file: everything after page 1 up to half of it.
    _corrupt(db, 4096, max(4096, size // 2 - 4096))
    before = file_bytes(db)
    with pytest.raises(StoreError) as exc:
        open_database(db)
    assert "corrupt" in one_line(exc)
    with pytest.raises(StoreError) as exc:
        open_database(db, readonly=True)
    one_line(exc)
    assert file_bytes(db) == before
    assert store.check(db) != ["ok"]
    assert file_bytes(db) == before


def test_corrupt_request_pages_are_found_by_check_and_reads_fail_cleanly(tmp_path):
    db = tmp_path / "corrupt-rows.db"
    run_id, _, _ = write_run(db, blobs=[records(4000, start=i * 200_000) for i in range(10)])
    conn = open_database(db)
    pages = conn.execute("SELECT pageno FROM dbstat WHERE name = 'request_records' AND pagetype = 'leaf' "
                         "ORDER BY pageno").fetchall()
    conn.close()
    middle = pages[len(pages) // 2][0]
    _corrupt(db, (middle - 1) * 4096 + 8, 4000)        # garbage in the middle of a leaf page
    before = file_bytes(db)
    problems = store.check(db)
    assert problems != ["ok"] and all("\n" not in p for p in problems)
    assert file_bytes(db) == before
    conn = open_database(db)                           # the core is fine: open still works
    with pytest.raises(StoreError) as exc:
        sum(1 for _ in store.iter_requests(conn, run_id))
    assert "corrupt" in one_line(exc)
    conn.close()


def test_parent_that_is_a_file_is_a_clear_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(StoreError) as exc:
        open_database(afile / "x.db")
    assert "afile" in one_line(exc) and "not a directory" in str(exc.value)
    with pytest.raises(StoreError) as exc:
        open_database(afile / "deeper" / "x.db")
    assert "afile" in one_line(exc)
    assert afile.read_text() == "x"


def test_read_only_directory_is_a_clear_error(tmp_path):
    if not read_only_dirs_are_enforced(tmp_path):
        # root writes through 0o500 anyway: run this test again without that power
        import shutil
        setpriv = shutil.which("setpriv")
        assert setpriv, "running as root needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE"
        dropped = "-dac_override,-dac_read_search"
        inner = subprocess.run(
            [setpriv, f"--bounding-set={dropped}", f"--inh-caps={dropped}", sys.executable,
             "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"{__file__}::test_read_only_directory_is_a_clear_error"],
            capture_output=True, text=True, timeout=120)
        assert inner.returncode == 0 and " passed" in inner.stdout, inner.stdout + inner.stderr
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    existing = ro / "old.db"
    open_database(existing).close()
    ro.chmod(0o500)
    try:
        with pytest.raises(StoreError) as exc:
            open_database(ro / "new.db")
        assert str(ro) in one_line(exc)
        with pytest.raises(StoreError) as exc:
            open_database(ro / "sub" / "new.db")
        assert str(ro) in one_line(exc)
        with pytest.raises(StoreError) as exc:
            open_database(existing)
        assert str(ro) in one_line(exc)
        conn = open_database(existing, readonly=True)   # reading still works
        assert conn.execute("SELECT count(*) FROM test_runs").get == 0
        conn.close()
    finally:
        ro.chmod(0o700)


# --------------------------------------------------------------------------- the writer

def test_run_writer_round_trip(tmp_path):
    db = tmp_path / "rt.db"
    writer = RunWriter(db)
    run_id, run_uuid = writer.begin(run_row(label="round trip", config={"c": 4}))
    assert run_id == writer.run_id and run_uuid == writer.uuid and len(run_uuid) == 36
    lock = store.run_lock_path(db, run_uuid)
    assert lock.exists()
    conn = open_database(db)                           # a live run is left alone
    assert store.find_run(conn, run_id)["status"] == "running"
    conn.close()

    blobs = [records(100, start=0), records(50, start=5000, status=404, worker=1),
             records(25, start=9000, status=0, error=2, worker=2)]
    for blob in blobs:
        writer.submit_records(blob)
    writer.submit_window(window(0))
    writer.submit_window(window(1, worker=1))
    writer.finish({"total_requests": 175, "success_count": 100, "error_count": 75, "p99": 1.25,
                   "latency_hist": b"\x01\x02", "status_codes": {200: 100, 404: 50},
                   "measured_duration": 1.0, "stop_reason": "duration"})
    assert (writer.rows_written, writer.windows_written, writer.dropped_records) == (175, 2, 0)
    assert not lock.exists()

    conn = open_database(db)
    try:
        run = store.find_run(conn, run_id)
        assert run["status"] == "completed" and run["completed_at"] >= run["started_at"]
        assert run["total_requests"] == 175 and run["p99"] == 1.25 and run["dropped_records"] == 0
        assert json.loads(run["status_codes"]) == {"200": 100, "404": 50}     # JSON text, as stored
        assert json.loads(run["headers"]) == {"X-A": "1"} and run["config"] == '{"c":4}'
        assert run["latency_hist"] == b"\x01\x02" and run["store_mode"] == "requests"
        rows = list(store.iter_requests(conn, run_id))
        assert [r["seq"] for r in rows] == list(range(175))
        assert rows[0] == {"test_run_id": run_id, "seq": 0, "timestamp": 0, "latency": 1000, "wait_us": 0,
                           "success": 1, "status_code": 200, "error": 0, "bytes": 200, "worker": 0}
        assert rows[100]["status_code"] == 404 and rows[100]["success"] == 0 and rows[100]["worker"] == 1
        assert rows[-1]["error"] == 2 and rows[-1]["status_code"] == 0 and rows[-1]["worker"] == 2
        # The PipeOps-shaped view says the same.
        view = conn.execute("SELECT seq, timestamp, latency, success, status_code, error, bytes, worker "
                            "FROM request_metrics WHERE test_run_id = ? ORDER BY seq", (run_id,)).fetchall()
        assert view == [(r["seq"], r["timestamp"], r["latency"], r["success"], r["status_code"],
                         r["error"], r["bytes"], r["worker"]) for r in rows]
        ms = conn.execute("SELECT timestamp, latency FROM request_metrics_ms WHERE test_run_id = ? "
                          "AND seq = 102", (run_id,)).fetchone()
        assert ms[1] == pytest.approx(1.002) and ms[0].endswith("Z") and ms[0][:10] == run["started_at"][:10]
        wins = store.run_windows(conn, run_id)
        assert [(w["second"], w["worker"]) for w in wins] == [(0, 0), (1, 1)]
        w0 = wins[0]
        assert (w0["requests"], w0["successes"], w0["errors"]) == (11, 9, 1)
        assert w0["counters"] == window(0)["counters"]
        assert json.loads(w0["error_kinds"]) == {"connect": 1} and w0["latency"] == b"L" * 16
        assert json.loads(w0["status_codes"]) == {"200": 9, "503": 1}
        assert conn.execute("PRAGMA integrity_check").get == "ok"
    finally:
        conn.close()


def test_store_modes(tmp_path):
    db = tmp_path / "modes.db"
    ids = {}
    for mode in ("requests", "windows", "none"):
        writer = RunWriter(db, store_mode=mode)
        ids[mode], _ = writer.begin(run_row())
        writer.submit_records(records(10))
        writer.submit_window(window(0))
        writer.finish({})
        assert writer.dropped_records == 0
    conn = open_database(db)
    counts = {mode: (sum(1 for _ in store.iter_requests(conn, i)), len(store.run_windows(conn, i)),
                     store.find_run(conn, i)["store_mode"]) for mode, i in ids.items()}
    conn.close()
    assert counts == {"requests": (10, 1, "requests"), "windows": (0, 1, "windows"), "none": (0, 0, "none")}


def test_duplicate_window_is_counted_not_fatal(tmp_path):
    db = tmp_path / "dup.db"
    writer = RunWriter(db)
    run_id, _ = writer.begin(run_row())
    writer.submit_window(window(3))
    writer.submit_window(window(3, responses=99))
    writer.submit_window({"worker": 0, "counters": {}})              # no second: malformed
    writer.submit_records(records(5))
    writer.finish({})
    assert (writer.windows_written, writer.duplicate_windows, writer.rows_written) == (1, 1, 5)
    assert writer.dropped_windows == 1 and writer.write_errors == 0
    conn = open_database(db)
    assert store.run_windows(conn, run_id)[0]["requests"] == 11      # the first one was kept
    conn.close()


def test_a_failed_batch_is_counted_as_dropped_and_the_run_goes_on(tmp_path):
    db = tmp_path / "fail.db"
    writer = RunWriter(db)
    run_id, _ = writer.begin(run_row())
    writer.submit_records(records(10))
    assert wait_for(lambda: writer.rows_written == 10, timeout_s=10.0, interval_s=0.002), "timed out"
    # A start time SQLite cannot hold (> 2**63 - 1): that batch's transaction fails.
    writer.submit_records(REC.pack(2**64 - 1, 1, 0, 0, 200, 0, 0) + records(9))
    assert wait_for(lambda: writer.write_errors == 1, timeout_s=10.0, interval_s=0.002), "timed out"
    writer.submit_records(records(10, start=10**6))
    writer.finish({})
    assert (writer.rows_written, writer.dropped_records, writer.dropped_batches) == (20, 10, 1)
    assert writer.write_errors == 1 and "OverflowError" in writer.last_error
    conn = open_database(db)
    run = store.find_run(conn, run_id)
    assert run["dropped_records"] == 10 and run["status"] == "completed"
    assert [r["seq"] for r in store.iter_requests(conn, run_id)] == list(range(20))
    conn.close()
    assert store.check(db) == ["ok"]


def test_submit_before_begin_is_a_programming_error(tmp_path):
    writer = RunWriter(tmp_path / "early.db")
    with pytest.raises(RuntimeError):
        writer.submit_records(records(1))
    with pytest.raises(ValueError, match="multiple of 24"):
        writer.submit_records(b"x" * 25)


def test_bad_run_values_are_value_errors(tmp_path):
    db = tmp_path / "bad.db"
    with pytest.raises(ValueError, match="unknown test_runs column"):
        RunWriter(db).begin(run_row(no_such_column=1))
    with pytest.raises(ValueError, match="invalid test_runs values"):
        RunWriter(db).begin(run_row(mode="sideways"))
    with pytest.raises(ValueError):
        RunWriter(db, store_mode="everything")
    conn = open_database(db)
    assert conn.execute("SELECT count(*) FROM test_runs").get == 0
    conn.close()
    assert not list(tmp_path.glob("*.lock"))


def _blocked_writer(db, **options):
    """A writer whose first batch is stuck behind another connection's write lock."""
    writer = RunWriter(db, queue_batches=2, **options)
    run_id, _ = writer.begin(run_row())
    blocker = open_database(db)
    blocker.execute("BEGIN IMMEDIATE")                 # the writer's next batch has to wait
    t_first = time.monotonic()
    writer.submit_records(records(1000, start=0))
    while writer._records:                             # the writer has taken it and is waiting
        assert time.monotonic() - t_first < 5          # (from memory, or from the spool:)
        time.sleep(0.001)
    time.sleep(0.05)
    # ...and, waiting on the lock, it does not hold the GIL: this thread keeps running.
    assert time.monotonic() - t_first < 1
    return writer, run_id, blocker


def _submit_nine_more(writer):
    slowest = 0.0
    for k in range(1, 10):
        t0 = time.perf_counter()
        writer.submit_records(records(1000, start=k * 1000 * 50))
        slowest = max(slowest, time.perf_counter() - t0)
    writer.submit_window(window(0))
    return slowest


def test_queue_overflow_counts_drops_and_never_blocks(tmp_path):
    db = tmp_path / "overflow.db"
    writer, run_id, blocker = _blocked_writer(db, spool_limit_bytes=0)   # no room on disk either
    try:
        slowest = _submit_nine_more(writer)
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert slowest < 0.05
    # one batch in the writer's hands, two in memory, seven dropped; windows have their own queue
    assert (writer.dropped_batches, writer.dropped_records, writer.dropped_windows) == (7, 7000, 0)
    writer.finish({"dropped_records": 5})
    assert writer.rows_written == 3000 and writer.windows_written == 1
    conn = open_database(db)
    assert store.find_run(conn, run_id)["dropped_records"] == 7005
    assert sum(1 for _ in store.iter_requests(conn, run_id)) == 3000
    conn.close()


def test_a_backlog_waits_in_the_named_spool_and_is_stored_in_order(tmp_path):
    db = tmp_path / "spool.db"
    writer, run_id, blocker = _blocked_writer(db)
    try:
        slowest = _submit_nine_more(writer)
        assert writer.spooled_records == 10_000         # every buffer goes to the spool file first
        spool = writer.spool_file                        # named, next to the database
        assert spool == tmp_path / f"spool.db.spool-{writer.uuid}" and spool.stat().st_size > 240_000
        assert not writer._records
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert slowest < 0.05
    writer.finish({})
    assert (writer.dropped_records, writer.rows_written) == (0, 10_000)
    assert not spool.exists()                          # all stored: the spool is gone
    conn = open_database(db)
    stamps = [row["timestamp"] for row in store.iter_requests(conn, run_id)]
    conn.close()
    assert stamps == sorted(stamps) and len(stamps) == 10_000


def test_wal_stays_bounded_during_a_run(tmp_path):
    db = tmp_path / "wal.db"
    bound = 1 << 20
    writer = RunWriter(db, wal_bound_bytes=bound)
    run_id, _ = writer.begin(run_row())
    wal = tmp_path / "wal.db-wal"
    sizes = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            try:
                sizes.append(wal.stat().st_size)
            except FileNotFoundError:
                pass
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    batches = 60
    try:
        for i in range(batches):
            writer.submit_records(records(4096, start=i * 4096 * 50))
            time.sleep(0.002)
        writer.finish({})
    finally:
        done.set()
        watcher.join()
    print(f"\nWAL bound {bound} B: largest -wal seen {max(sizes)} B (writer saw {writer.max_wal_bytes} B), "
          f"{writer.checkpoints} PASSIVE checkpoints for {batches} batches")
    assert writer.dropped_records == 0 and writer.rows_written == batches * 4096
    assert writer.checkpoints > 0
    assert max(sizes) < bound and writer.max_wal_bytes < bound
    assert wal.stat().st_size == 0 if wal.exists() else True     # TRUNCATE at the end


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, struct, sys, time
    from loadtester.model import RECORD_FORMAT
    from loadtester.store import RunWriter
    rec = struct.Struct(RECORD_FORMAT)
    writer = RunWriter(sys.argv[1])
    run_id, run_uuid = writer.begin({"url": "http://127.0.0.1/", "mode": "closed"})
    for b in range(3):
        writer.submit_records(b"".join(rec.pack(b * 10**6 + i, 900, 0, 10, 200, 0, 0) for i in range(2000)))
    writer.submit_window({"worker": 0, "second": 0, "counters": {"responses": 6000, "successes": 6000,
                          "bytes": 60000, "errors": [0] * 6, "status": {200: 6000}}})
    while writer.rows_written < 6000 or writer.windows_written < 1:
        time.sleep(0.005)
    print(run_id, run_uuid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_killed_writer_leaves_an_interrupted_run_with_its_rows(tmp_path):
    db = tmp_path / "killed.db"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(db)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id, run_uuid = proc.stdout.split()
    lock = store.run_lock_path(db, run_uuid)
    assert lock.exists()                               # the dead writer's lock file stays behind...
    conn = open_database(db)                           # ...until the next open reaps the run
    try:
        run = store.find_run(conn, run_id)
        assert run["status"] == "interrupted" and run["completed_at"]
        assert run["total_requests"] == 6000 and run["success_count"] == 6000
        assert sum(1 for _ in store.iter_requests(conn, run["id"])) == 6000
        assert conn.execute("PRAGMA integrity_check").get == "ok"
    finally:
        conn.close()
    assert not lock.exists()
    assert store.check(db) == ["ok"]


FORK_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from loadtester.store import RunWriter
    writer = RunWriter(sys.argv[1])
    run_id, run_uuid = writer.begin({"url": "http://127.0.0.1/"})
    started_r, started_w = os.pipe()
    if os.fork() == 0:                                 # a forked worker outlives its parent
        os.write(started_w, b"1")                      # (after the at-fork hooks have run)
        time.sleep(30)
        os._exit(0)
    os.read(started_r, 1)
    print(run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_forked_children_do_not_keep_the_run_lock(tmp_path):
    db = tmp_path / "forked.db"
    proc = subprocess.Popen([sys.executable, "-c", FORK_SCRIPT, str(db)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        run_id = proc.stdout.readline().strip()
        proc.wait(timeout=30)
        conn = open_database(db)                       # the child still runs; the run is reaped
        assert store.find_run(conn, run_id)["status"] == "interrupted"
        conn.close()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)            # the orphaned child, still in our session


def test_bytes_per_request_row_and_rows_per_second(tmp_path):
    db = tmp_path / "size.db"
    rnd = random.Random(1)
    n_rows, per_blob = 200_000, 8192
    t, blobs, pending = 0, [], []
    for i in range(n_rows):
        t += rnd.randint(20, 80)                       # ~50 µs apart: a 10 s run at 20k rps
        pending.append(REC.pack(t, rnd.randint(300, 5000), 0, rnd.randint(150, 400), 200, 0, 0))
        if len(pending) == per_blob:
            blobs.append(b"".join(pending))
            pending = []
    blobs.append(b"".join(pending))
    writer = RunWriter(db)
    run_id, _ = writer.begin(run_row())
    t0 = time.perf_counter()
    for blob in blobs:
        writer.submit_records(blob)
    writer.finish({"total_requests": n_rows})
    seconds = time.perf_counter() - t0
    assert writer.rows_written == n_rows and writer.dropped_records == 0
    info = store.stats(db)
    per_row = info["bytes_per_request_row"]
    print(f"\nrequest rows: {per_row:.2f} bytes/row on disk ({info['bytes_per_request_row_source']}, "
          f"{n_rows} rows, index included); writer {n_rows / seconds:,.0f} rows/s")
    assert info["request_rows"] == n_rows
    assert per_row <= 24


# --------------------------------------------------------------------------- backup and restore

def _count_rows(db, run_id):
    conn = open_database(db, readonly=True)
    try:
        return sum(1 for _ in store.iter_requests(conn, run_id))
    finally:
        conn.close()


def test_backup_while_a_run_writes_is_consistent(tmp_path, monkeypatch):
    db = tmp_path / "live.db"
    done_runs = [write_run(db, blobs=[records(4096, start=k * 10**6) for k in range(8)])[0] for _ in range(3)]
    monkeypatch.setattr(maintenance, "BACKUP_STEP_PAGES", 64)
    writer = RunWriter(db)
    live_id, _ = writer.begin(run_row(label="live"))
    stop = threading.Event()

    def feed():
        k = 0
        while not stop.is_set():
            writer.submit_records(records(512, start=k * 10**5))
            k += 1
            time.sleep(0.001)

    feeder = threading.Thread(target=feed)
    feeder.start()
    rows_at = []

    def progress(copied, total):
        if not rows_at:                                # hold the copy until the writer commits more
            start = writer.rows_written
            deadline = time.monotonic() + 10
            while writer.rows_written < start + 2048 and time.monotonic() < deadline:
                time.sleep(0.002)
            rows_at.append((start, writer.rows_written))

    (tmp_path / "b").mkdir()
    try:
        result = store.backup(db, tmp_path / "b" / "backup.db", progress=progress)
    finally:
        stop.set()
        feeder.join()
        writer.finish({})
    dest = tmp_path / "b" / "backup.db"
    start, after = rows_at[0]
    assert after >= start + 2048                       # commits happened mid-copy
    assert result["steps"] == -(-result["pages"] // 64)   # one pass: never restarted
    assert result["bytes"] == dest.stat().st_size > 0
    assert sorted(p.name for p in dest.parent.iterdir()) == ["backup.db"]   # one self-contained file
    assert store.check(dest) == ["ok"]
    for run_id in done_runs:
        assert _count_rows(dest, run_id) == 8 * 4096
    conn = open_database(dest, readonly=True)
    live = store.find_run(conn, live_id)
    conn.close()
    assert live["status"] == "running"                 # as it was when the copy began


def test_backup_refuses_itself_and_foreign_destinations(tmp_path):
    db = tmp_path / "db.db"
    write_run(db, blobs=[records(10)])
    with pytest.raises(StoreError, match="is the database itself"):
        store.backup(db, tmp_path / "." / "db.db")
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    with pytest.raises(StoreError, match="refusing to overwrite"):
        store.backup(db, notes)
    assert notes.read_text() == "precious"
    with pytest.raises(StoreError, match="no database at"):
        store.backup(tmp_path / "missing.db", tmp_path / "x.db")
    assert not (tmp_path / "x.db").exists()
    first = store.backup(db, tmp_path / "again.db")   # overwriting an older backup is fine
    second = store.backup(db, tmp_path / "again.db")
    assert first["bytes"] == second["bytes"]


def test_restore_round_trip_keeps_the_old_file(tmp_path):
    db = tmp_path / "data" / "loadtest.db"
    a_id, a_uuid, _ = write_run(db, blobs=[records(300)], label="A")
    backup_path = tmp_path / "backup.db"
    store.backup(db, backup_path)
    b_id, b_uuid, _ = write_run(db, blobs=[records(200)], label="B")

    kept = store.restore(backup_path, db)
    assert kept is not None and kept.name.startswith("loadtest.db.bak-")
    conn = open_database(db)
    try:
        assert store.find_run(conn, a_uuid[:8])["label"] == "A"
        assert store.find_run(conn, b_uuid[:8]) is None
        assert sum(1 for _ in store.iter_requests(conn, a_id)) == 300
        assert conn.pragma("journal_mode") == "wal"
    finally:
        conn.close()
    assert store.check(db) == ["ok"]
    old = open_database(kept, readonly=True)          # the previous database, whole
    assert store.find_run(old, b_uuid)["label"] == "B"
    old.close()
    assert not list(db.parent.glob("*.restore-tmp*"))


def test_restore_over_a_corrupt_database(tmp_path):
    db = tmp_path / "loadtest.db"
    run_id, _, _ = write_run(db, blobs=[records(2000)])
    good = tmp_path / "good.db"
    store.backup(db, good)
    _corrupt(db, 4096, db.stat().st_size // 2)
    damaged = file_bytes(db)
    with pytest.raises(StoreError):
        open_database(db)
    kept = store.restore(good, db)
    assert file_bytes(kept) == damaged                 # the damaged file is kept, as it was
    assert store.check(db) == ["ok"]
    assert _count_rows(db, run_id) == 2000


def test_restore_refusals_leave_the_database_alone(tmp_path):
    db = tmp_path / "loadtest.db"
    write_run(db, blobs=[records(100)])
    good = tmp_path / "good.db"
    store.backup(db, good)
    before = file_bytes(db)

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(file_bytes(good))
    _corrupt(corrupt, 4096, 3 * 4096)
    newer = tmp_path / "newer.db"
    conn = apsw.Connection(str(newer))
    conn.execute("CREATE TABLE x (y)")
    conn.pragma("application_id", store.APPLICATION_ID)
    conn.pragma("user_version", store.SCHEMA_VERSION + 1)
    conn.close()
    text = tmp_path / "text.db"
    text.write_text("not a database")
    for src, expected in ((corrupt, "corrupt"), (newer, "newer loadtester"), (text, "not an SQLite"),
                          (tmp_path / "absent.db", "no backup at"), (db, "the database itself")):
        with pytest.raises(StoreError) as exc:
            store.restore(src, db)
        assert expected in one_line(exc)
        assert file_bytes(db) == before

    writer = RunWriter(db)                             # a live run holds its lock
    writer.begin(run_row())
    with pytest.raises(StoreError) as exc:
        store.restore(good, db)
    assert "still writing" in one_line(exc)
    writer.finish({})
    store.restore(good, db)                            # and once it is done, restore works
    assert store.check(db) == ["ok"]


def test_restore_into_missing_database_and_reaps_running_rows(tmp_path):
    src = tmp_path / "src.db"
    writer = RunWriter(src)
    run_id, _ = writer.begin(run_row())
    writer.submit_records(records(10))
    assert wait_for(lambda: writer.rows_written == 10, timeout_s=10.0, interval_s=0.002), "timed out"
    snapshot = tmp_path / "snap.db"
    store.backup(src, snapshot)                        # caught mid-run: status 'running'
    writer.finish({})
    target = tmp_path / "new" / "restored.db"
    assert store.restore(snapshot, target) is None
    conn = open_database(target)
    assert store.find_run(conn, run_id)["status"] == "interrupted"
    conn.close()


# --------------------------------------------------------------------------- reading, check, stats, prune

def test_find_run_by_id_uuid_prefix_and_last(tmp_path):
    db = tmp_path / "find.db"
    ids = []
    for uid, started in (("abcd1111-0000-0000-0000-000000000000", "2025-01-01T00:00:00.000Z"),
                         ("abcd2222-0000-0000-0000-000000000000", "2025-01-03T00:00:00.000Z"),
                         ("ef015555-0000-0000-0000-000000000000", "2025-01-02T00:00:00.000Z")):
        writer = RunWriter(db, store_mode="none")
        ids.append(writer.begin(run_row(uuid=uid, started_at=started))[0])
        writer.finish({})
    conn = open_database(db)
    try:
        assert store.find_run(conn, str(ids[0]))["uuid"].startswith("abcd1111")
        assert store.find_run(conn, ids[2])["uuid"].startswith("ef01")
        assert store.find_run(conn, "ef01")["id"] == ids[2]
        assert store.find_run(conn, "ABCD2222")["id"] == ids[1]
        assert store.find_run(conn, "last")["id"] == ids[1]            # latest started_at
        assert store.find_run(conn, "9999") is None
        assert store.find_run(conn, "ffff") is None
        with pytest.raises(StoreError, match="ambiguous"):
            store.find_run(conn, "abcd")
        with pytest.raises(StoreError, match="too short"):
            store.find_run(conn, "ab")
        listed = store.list_runs(conn)
        assert [r["id"] for r in listed] == [ids[1], ids[2], ids[0]]
        assert "latency_hist" not in listed[0] and listed[0]["headers"] == '{"X-A":"1"}'
        assert len(store.list_runs(conn, limit=1)) == 1
    finally:
        conn.close()


def test_check_and_stats(tmp_path):
    db = tmp_path / "cs.db"
    write_run(db, blobs=[records(1000)], windows=[window(0), window(1)])
    assert store.check(db) == ["ok"]
    info = store.stats(db)
    assert (info["runs"], info["running_runs"], info["request_rows"], info["window_rows"]) == (1, 0, 1000, 2)
    assert info["db_bytes"] > 0 and info["schema_version"] == store.SCHEMA_VERSION
    assert info["bytes_per_request_row"] > 0 and info["bytes_per_request_row_source"] == "dbstat"
    assert 1000 * info["bytes_per_request_row"] < info["bytes_per_run"] <= info["db_bytes"]
    # Reading leaves no -wal/-shm behind on a database nobody else has open.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cs.db"]
    with pytest.raises(StoreError, match="no database at"):
        store.stats(tmp_path / "none.db")
    with pytest.raises(StoreError, match="no database at"):
        store.check(tmp_path / "none.db")


def test_check_reports_foreign_key_and_batch_problems(tmp_path):
    db = tmp_path / "fk.db"
    write_run(db, blobs=[records(10)])
    conn = apsw.Connection(str(db))                    # damage it behind our back
    conn.pragma("foreign_keys", "OFF")
    conn.execute("INSERT INTO metric_windows (test_run_id, worker, second, requests, successes, errors, bytes) "
                 "VALUES (999, 0, 0, 1, 1, 0, 0)")
    conn.execute("INSERT INTO request_records (timestamp, latency, wait_us, bytes, code) VALUES (0, 1, 0, 0, 200)")
    conn.close()
    problems = store.check(db)
    assert any("foreign key: metric_windows" in p for p in problems)
    assert any("request_records holds 11 rows" in p for p in problems)


def test_prune_deletes_old_runs_with_their_rows(tmp_path):
    db = tmp_path / "prune.db"
    old_id, _, _ = write_run(db, blobs=[records(3000), records(3000)], windows=[window(0)],
                             started_at="2020-01-01T00:00:00.000Z")
    old2_id, _, _ = write_run(db, blobs=[records(100)], started_at="2020-06-01 00:00:00")   # PipeOps style
    new_id, _, _ = write_run(db, blobs=[records(500)], windows=[window(0)])
    stale = RunWriter(db)                              # an old run still writing is never pruned
    stale_id, _ = stale.begin(run_row(started_at="2020-01-02T00:00:00.000Z"))
    try:
        result = store.prune(db, 30 * 86400)
    finally:
        stale.finish({})
    assert result["runs_deleted"] == 2 and result["rows_deleted"] == 6100 and result["windows_deleted"] == 1
    conn = open_database(db)
    try:
        assert [r["id"] for r in store.list_runs(conn)] == [new_id, stale_id]
        assert conn.execute("SELECT count(*) FROM request_records").get == 500
        assert conn.execute("SELECT count(*) FROM request_batches").get == 1
        assert conn.execute("SELECT count(*) FROM metric_windows").get == 1
    finally:
        conn.close()
    assert store.check(db) == ["ok"]
    again = store.prune(db, 0, vacuum=True)
    assert again["runs_deleted"] == 2 and again["vacuumed"]
    assert store.check(db) == ["ok"]
    assert store.stats(db)["request_rows"] == 0
