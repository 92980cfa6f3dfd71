"""Storage under faults (issue 12): a disk that fills during a blast, kill -9 of a saturated
blast, exports of a million rows, and every failure path of the commands that read and look
after the database.  Real SQLite files, real processes, real filesystems (a tmpfs mounted
here: CI runs as root), real servers on 127.0.0.1; no mocks."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest


from conftest import ROOT, read_only_dirs_are_enforced, wait_for
from loadtester import _engine, store
from loadtester.model import RECORD_FORMAT
from loadtester.store import RunWriter, open_database

REC = struct.Struct(RECORD_FORMAT)
# Every test here runs real processes (the CLI, killed writers, mounts): end to end.
pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- helpers

def run_cli(*args, stdin=subprocess.DEVNULL, timeout=120, prefix=()):
    """`python -m loadtester ARGS`, never attached to a terminal unless given one."""
    return subprocess.run([*prefix, sys.executable, "-m", "loadtester", *map(str, args)],
                          stdin=stdin, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def assert_one_line(result, code, *fragments):
    """Exit status `code`, exactly one line on stderr, 'loadtester: ...', no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadtester: "), result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def records(n, *, start=0, status=200, error=0, worker=0) -> bytes:
    return b"".join(REC.pack(start + i * 20, 300 + i % 500, i % 3, 120, status, error, worker)
                    for i in range(n))


def window(second, responses=1000, worker=0):
    hist = _engine.Histogram()
    for v in (300, 400, 500):
        hist.record_value(v)
    return {"worker": worker, "second": second,
            "counters": {"responses": responses, "successes": responses, "bytes": 120 * responses,
                         "errors": [0] * 6, "status": {200: responses}, "max_wait_us": 0},
            "latency": hist.to_bytes(), "service": hist.to_bytes(), "loop_lag_us": 5,
            "in_flight": 2, "partial": False}


def summary(n):
    hist = _engine.Histogram()
    for v in range(300, 300 + n):
        hist.record_value(v)
    return {"total_requests": n, "success_count": n, "error_count": 0, "bytes": 120 * n,
            "status_codes": {"200": n}, "errors_by_kind": {}, "latency_hist": hist.to_bytes(),
            "service_hist": hist.to_bytes(), "measured_duration": 1.0, "rps": float(n),
            "stop_reason": "count"}


def write_run(db, n_rows=1000, **columns):
    writer = RunWriter(db)
    run_id, run_uuid = writer.begin({"url": "http://127.0.0.1:1/", "mode": "closed", "total_users": 2,
                                     "workers": 1, **columns})
    if n_rows:
        writer.submit_records(records(n_rows))
    writer.submit_window(window(0, responses=n_rows))
    writer.finish(summary(n_rows))
    return run_id, run_uuid


def stored_rows(db, run_id) -> int:
    conn = open_database(db, readonly=True)
    try:
        return conn.execute("SELECT coalesce(sum(last_id - first_id + 1), 0) FROM request_batches "
                            "WHERE test_run_id = ?", (run_id,)).get
    finally:
        conn.close()


def need_root(what):
    assert os.geteuid() == 0, f"{what} needs root (mount); CI runs the tests as root"


@contextlib.contextmanager
def tmpfs(path: pathlib.Path, size: str):
    """A real, small filesystem at path for the test's duration."""
    need_root("a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: pathlib.Path) -> pathlib.Path:
    """Take every free byte of the filesystem at directory."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc
    finally:
        os.close(fd)
    st = os.statvfs(directory)
    assert st.f_bavail * st.f_frsize < 4096
    return filler


def snapshot(directory: pathlib.Path) -> dict:
    """Name -> (size, mtime) of each file; of the -shm only its size: it is SQLite's shared
    memory, where every WAL reader marks what it reads (no stored data)."""
    return {p.name: (p.stat().st_size, None if p.name.endswith("-shm") else p.stat().st_mtime_ns)
            for p in directory.iterdir()}


# --------------------------------------------------------------------------- the spool and kill -9

BLOCKED_THEN_KILLED = textwrap.dedent("""
    import os, signal, struct, sys, time
    sys.path.insert(0, sys.argv[2])
    from test_storage_faults import records, window
    from loadtester.store import RunWriter, open_database
    db = sys.argv[1]
    writer = RunWriter(db)
    run_id, run_uuid = writer.begin({"url": "http://127.0.0.1:1/", "mode": "closed"})
    blocker = open_database(db)
    blocker.execute("BEGIN IMMEDIATE")         # the writer thread cannot store anything now
    for k in range(50):
        writer.submit_records(records(2000, start=k * 40_000))
        if k % 10 == 9:
            writer.submit_window(window(k // 10, responses=20_000))
    print(run_id, run_uuid, writer.spool_file, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_9_keeps_what_reached_the_spool_and_the_next_open_stores_it(tmp_path):
    db = tmp_path / "k.db"
    write_run(db, label="earlier")
    proc = subprocess.run([sys.executable, "-c", BLOCKED_THEN_KILLED, str(db), str(ROOT / "tests")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id, run_uuid, spool = proc.stdout.split()
    assert pathlib.Path(spool).name == f"k.db.spool-{run_uuid}" and pathlib.Path(spool).exists()
    assert stored_rows(db, run_id) == 0                 # nothing reached SQLite

    # Reading commands open read-only: they leave the spool alone, and show the dead run
    # as interrupted (its writer holds no lock any more).
    listed = json.loads(run_cli("runs", "--json", "--db", db).stdout)
    assert [r["status"] for r in listed] == ["interrupted", "completed"]
    assert pathlib.Path(spool).exists()

    conn = open_database(db)                           # the next writable open replays it
    try:
        run = store.find_run(conn, run_id)
        assert run["status"] == "interrupted" and run["spooled"] > 0
        assert run["total_requests"] == 100_000 and run["success_count"] == 100_000
        rows = list(store.iter_request_tuples(conn, run_id))
        assert len(rows) == 100_000 and [r[1] for r in rows] == list(range(100_000))
        assert [w["second"] for w in store.run_windows(conn, run_id)] == [0, 1, 2, 3, 4]
    finally:
        conn.close()
    assert not pathlib.Path(spool).exists() and not list(tmp_path.glob("*.lock"))
    assert store.check(db) == ["ok"]
    assert stored_rows(db, 1) == 1000                  # the earlier run, untouched
    open_database(db).close()                          # replaying is done once
    assert stored_rows(db, run_id) == 100_000

    shown = json.loads(run_cli("show", run_id, "--json", "--db", db).stdout)
    assert shown["status"] == "interrupted" and shown["requests"] == 100_000
    assert shown["partial"] == {"from": "windows", "windows": 5, "seconds": 5}
    text = run_cli("show", run_id, "--no-windows", "--db", db).stdout
    assert "Partial      the run did not finish: the numbers above are rebuilt from its 5 stored windows" in text


ROWS_NO_WINDOWS_THEN_KILLED = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, sys.argv[2])
    from test_storage_faults import records
    from loadtester.store import RunWriter
    writer = RunWriter(sys.argv[1], store_mode="requests")
    run_id, _ = writer.begin({"url": "http://127.0.0.1:1/", "mode": "closed"})
    writer.submit_records(records(3000) + records(1000, status=503) + records(500, status=0, error=2))
    while writer.rows_written < 4500:
        time.sleep(0.005)
    print(run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_run_without_windows_is_rebuilt_from_its_request_rows(tmp_path):
    db = tmp_path / "rows.db"
    proc = subprocess.run([sys.executable, "-c", ROWS_NO_WINDOWS_THEN_KILLED, str(db), str(ROOT / "tests")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    for command in (("runs", "--json"), ("show", "last", "--json")):   # read-only: derived status
        result = run_cli(*command, "--db", db)
        assert result.returncode == 0, result.stderr
    listed = json.loads(run_cli("runs", "--json", "--db", db).stdout)[0]
    assert listed["status"] == "interrupted" and listed["total_requests"] == 4500
    assert listed["success_count"] == 3000 and listed["error_count"] == 1500
    shown = json.loads(run_cli("show", "last", "--json", "--db", db).stdout)
    assert (shown["status"], shown["requests"], shown["attempts"], shown["successes"]) == \
        ("interrupted", 4000, 4500, 3000)                # not "0 completed"
    assert shown["errors_by_kind"] == {"timeout": 500, "status": 1000}
    assert shown["partial"] == {"from": "request rows", "request_rows": 4500}
    assert shown["latency_ms"]["p50"] is not None


KILLED_AFTER_FINISH = textwrap.dedent("""
    import os, signal, sys
    from loadtester.store import RunWriter, locks
    def die(fd, path):                         # kill -9 between the last commit and the unlink
        os.kill(os.getpid(), signal.SIGKILL)
    locks.release = die
    writer = RunWriter(sys.argv[1], store_mode="none")
    writer.begin({"url": "http://127.0.0.1:1/"})
    writer.finish({"total_requests": 0})
""")


def test_a_stale_run_lock_is_removed_by_the_next_open(tmp_path):
    db = tmp_path / "stale.db"
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_FINISH, str(db)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (lock,) = tmp_path.glob("stale.db.run-*.lock")
    assert json.loads(run_cli("runs", "--json", "--db", db).stdout)[0]["status"] == "completed"
    assert lock.exists()                               # reading leaves it
    open_database(db).close()
    assert not lock.exists()
    assert store.check(db) == ["ok"]


OPEN_AT = textwrap.dedent("""
    import sys, time
    from loadtester.store import open_database
    start, paths = float(sys.argv[1]), sys.argv[2:]
    for k, path in enumerate(paths):
        time.sleep(max(0.0, start + k * 0.1 - time.time()))
        open_database(path).close()
""")


def test_concurrent_first_opens_of_a_new_database_never_fail(tmp_path):
    paths = [str(tmp_path / f"new-{k}.db") for k in range(12)]
    start = time.time() + 1.5                          # after every interpreter is up
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(start), *paths], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    failures = []
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        if proc.returncode:
            failures.append(err.strip().splitlines()[-1])
    assert not failures, failures
    for path in paths:
        assert store.check(path) == ["ok"]
        conn = open_database(path, readonly=True)
        assert conn.pragma("user_version") == store.SCHEMA_VERSION and conn.pragma("journal_mode") == "wal"
        conn.close()


# --------------------------------------------------------------------------- exports

def test_json_export_of_a_million_rows_is_streamed(tmp_path):
    db = tmp_path / "big.db"
    blob = records(8192)
    writer = RunWriter(db, writer_nice=0)
    run_id, _ = writer.begin({"url": "http://127.0.0.1:1/", "mode": "closed"})
    batches = 123                                      # 1,007,616 rows
    for _ in range(batches):
        writer.submit_records(blob)
    writer.finish(summary(10))
    assert writer.rows_written == 8192 * batches and writer.dropped_records == 0
    out = tmp_path / "rows.json"
    measure = ("import resource, subprocess, sys, time\n"
               "t = time.monotonic()\n"
               "rc = subprocess.call(sys.argv[1:])\n"
               "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.monotonic() - t)\n")
    result = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "loadtester", "export",
                             str(run_id), "--requests", "--format", "json", "-o", str(out), "--db", str(db)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    rc, max_rss_kib, seconds = result.stdout.split()
    assert rc == "0", result.stderr
    print(f"\nexport of {8192 * batches:,} rows as JSON: peak RSS {int(max_rss_kib) / 1024:.1f} MiB, "
          f"{float(seconds):.1f} s, {out.stat().st_size / 2**20:.0f} MiB")
    assert int(max_rss_kib) < 100 * 1024
    seen = {"rows": 0}

    def check_row(obj):                                # json.load parses it all; rows not kept
        if "seq" in obj:
            assert obj["seq"] == seen["rows"] and obj["test_run_id"] == run_id
            seen["rows"] += 1
            return None
        return obj

    with open(out) as f:
        document = json.load(f, object_hook=check_row)
    assert seen["rows"] == 8192 * batches and len(document["rows"]) == 8192 * batches
    assert document["run"]["run_id"] == run_id
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_export_failures_are_one_line_and_leave_nothing(tmp_path):
    db = tmp_path / "e.db"
    write_run(db, n_rows=200)
    assert_one_line(run_cli("export", "last", "--requests", "-o", "/nonexist/dir/x.csv", "--db", db), 1,
                    "cannot write /nonexist/dir/x.csv: No such file or directory")
    assert not pathlib.Path("/nonexist").exists()
    assert_one_line(run_cli("export", "last", "-o", "/proc/x.csv", "--db", db), 1,
                    "cannot write /proc/x.csv:")
    assert_one_line(run_cli("export", "last", "-o", tmp_path, "--db", db), 2,      # bad usage
                    f"'{tmp_path}' is a directory")
    good = run_cli("export", "last", "--requests", "--format", "ndjson", "-o", tmp_path / "ok.ndjson",
                   "--db", db)
    assert good.returncode == 0 and good.stderr == ""
    assert len((tmp_path / "ok.ndjson").read_text().splitlines()) == 200


def test_export_onto_a_full_disk_leaves_nothing_behind(tmp_path):
    db = tmp_path / "e.db"
    write_run(db, n_rows=50_000)                        # ~5 MB of CSV
    with tmpfs(tmp_path / "small", "1m") as small:
        previous = small / "x.csv"
        previous.write_text("an older export\n")
        result = run_cli("export", "last", "--requests", "-o", previous, "--db", db)
        assert_one_line(result, 1, f"cannot write {previous}: disk full")
        assert sorted(p.name for p in small.iterdir()) == ["x.csv"]     # no partial file
        assert previous.read_text() == "an older export\n"             # and the old one intact


def test_opening_a_closed_database_on_a_full_disk_says_disk_full_and_leaves_it_as_found(tmp_path):
    # No -wal or -shm yet (the last connection tidied them): SQLite cannot make its -shm and
    # says only "disk I/O error"; the message names the cause, and the failed open leaves
    # no sidecar behind.  Reading commands still read, and write nothing.
    with tmpfs(tmp_path / "small", "1m") as small:
        db = small / "f.db"
        write_run(db, n_rows=100)
        assert sorted(p.name for p in small.iterdir()) == ["f.db"]
        fill(small)
        before = snapshot(small)
        refused = run_cli("blast", "http://127.0.0.1:1/", "-n", "1", "--no-progress", "--db", db)
        assert_one_line(refused, 1, f"cannot open database {db}: disk full")
        assert snapshot(small) == before
        for command in (("runs",), ("show", "last"), ("db", "check")):
            result = run_cli(*command, "--db", db)
            assert result.returncode == 0, result.stderr
            assert snapshot(small) == before, command


# --------------------------------------------------------------------------- one line each

def test_huge_numbers_are_no_overflow(tmp_path):
    db = tmp_path / "n.db"
    write_run(db)
    assert_one_line(run_cli("show", "99999999999999999999", "--db", db), 1, "no run '99999999999999999999'")
    result = run_cli("db", "prune", "--older-than", "1000000000000d", "--db", db)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("pruned 0 run(s), 0 request rows")


def test_prune_of_recent_runs_asks_on_a_terminal_and_needs_yes_otherwise(tmp_path):
    db = tmp_path / "p.db"
    write_run(db)
    write_run(db)
    assert_one_line(run_cli("db", "prune", "--older-than", "0s", "--db", db), 2,
                    "loadtester: error: --older-than 0s deletes 2 of the 2 runs", "add --yes to confirm")
    assert store.stats(db)["runs"] == 2

    def on_a_terminal(answer):
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "loadtester", "db", "prune", "--older-than", "0s",
                                 "--db", str(db)], stdin=slave, stdout=subprocess.PIPE,
                                stderr=slave, cwd=ROOT, text=True)
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 30
        while b"Delete them?" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 4096)
        assert b"deletes 2 of the 2 runs" in seen, seen
        os.write(master, answer)
        out, _ = proc.communicate(timeout=30)
        with contextlib.suppress(OSError):
            while select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 4096)
        os.close(master)
        return proc.returncode, out, seen.decode(errors="replace")

    code, out, terminal = on_a_terminal(b"n\n")
    assert code == 1 and "loadtester: prune cancelled; nothing deleted" in terminal and out == ""
    assert store.stats(db)["runs"] == 2
    code, out, terminal = on_a_terminal(b"y\n")
    assert code == 0 and out.startswith("pruned 2 run(s)")
    assert store.stats(db)["runs"] == 0
    write_run(db)
    result = run_cli("db", "prune", "--older-than", "0s", "--yes", "--db", db)
    assert result.returncode == 0 and result.stdout.startswith("pruned 1 run(s)")


def test_backup_refuses_a_missing_directory(tmp_path):
    db = tmp_path / "b.db"
    write_run(db)
    missing = tmp_path / "nonexistentdir"
    assert_one_line(run_cli("db", "backup", missing / "x.db", "--db", db), 1,
                    f"directory {missing} does not exist")
    assert not missing.exists()


def test_reading_commands_work_in_a_read_only_directory(tmp_path):
    ro = tmp_path / "ro-dir"
    ro.mkdir()
    db = ro / "x.db"
    run_id, _ = write_run(db, n_rows=300, label="kept")
    prefix = ()
    if not read_only_dirs_are_enforced(tmp_path):
        # root writes through 0o555 anyway: run the commands without that power
        setpriv = shutil.which("setpriv")
        assert setpriv, "running as root needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE"
        dropped = "-dac_override,-dac_read_search"
        prefix = (setpriv, f"--bounding-set={dropped}", f"--inh-caps={dropped}")
    before = snapshot(ro)
    ro.chmod(0o555)
    try:
        result = run_cli("runs", "--db", db, prefix=prefix)
        assert result.returncode == 0 and "kept" in result.stdout, result.stderr
        result = run_cli("show", "last", "--json", "--db", db, prefix=prefix)
        assert result.returncode == 0 and json.loads(result.stdout)["requests"] == 300, result.stderr
        result = run_cli("export", run_id, "--requests", "--format", "csv", "--db", db, prefix=prefix)
        assert result.returncode == 0 and len(result.stdout.splitlines()) == 301, result.stderr
        refused = run_cli("blast", "http://127.0.0.1:1/", "-n", "1", "--db", db, prefix=prefix)
        assert_one_line(refused, 1, f"directory {ro} is not writable")
    finally:
        ro.chmod(0o755)
    assert snapshot(ro) == before


def _labelled_run(path, label, **extra):
    writer = RunWriter(path, store_mode="none")
    run_id, _ = writer.begin({"url": "http://127.0.0.1:1/", "mode": "closed", "total_users": 4,
                              "label": label, **extra})
    writer.finish(summary(100))
    return run_id


def test_merge_joins_only_shards_unless_by_label(tmp_path):
    a, b, c = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"
    _labelled_run(a, "nightly", run_group="g7", shard="0/2")
    _labelled_run(b, "nightly", run_group="g7", shard="1/2")
    _labelled_run(a, "checkout")                        # two unrelated runs that share a label
    _labelled_run(b, "checkout")
    _labelled_run(c, None)                              # and one with no label at all
    result = run_cli("merge", a, b, c, "--into", tmp_path / "all.db")
    assert result.returncode == 0, result.stderr
    assert "group 'g7': 2 run(s) -> run 1" in result.stdout and "checkout" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("loadtester: skipped run ") for line in lines)
    assert sum("1 other run(s) share its label 'checkout': --by-label merges runs by their label" in line
               for line in lines) == 2
    assert any(f"in {c}: not a shard of a run (no --run-id) and no label" in line for line in lines)
    conn = open_database(tmp_path / "all.db", readonly=True)
    assert conn.execute("SELECT count(*) FROM test_runs").get == 1
    conn.close()

    only_loose = run_cli("merge", c, "--into", tmp_path / "none.db")
    assert_one_line(only_loose, 1, "skipped run 1")       # nothing merged: exit 1, said why
    by_label = run_cli("merge", a, b, "--by-label", "--into", tmp_path / "labels.db")
    assert by_label.returncode == 0, by_label.stderr
    assert "group 'checkout': 2 run(s)" in by_label.stdout and "group 'g7': 2 run(s)" in by_label.stdout


def test_a_run_that_cannot_even_record_its_end_is_not_left_running(tmp_path):
    """No room for the run's last write (its space reserve taken too): finish() says so in one
    line, reading commands show the run interrupted, and the next open once there is room
    records it so."""
    with tmpfs(tmp_path / "small", "1m") as small:
        db = small / "x.db"
        write_run(db, n_rows=100, label="earlier")
        writer = RunWriter(db)
        run_id, run_uuid = writer.begin({"url": "http://127.0.0.1:1/", "mode": "closed"})
        writer.submit_records(records(2000))
        writer.submit_window(window(0, responses=2000))
        assert wait_for(lambda: writer.rows_written == 2000 and writer.windows_written == 1, timeout_s=10)
        fillers = [fill(small)]
        os.truncate(store.run_lock_path(db, run_uuid), 0)   # as if there were no reserve
        fillers.append(small / "filler2")
        fill_more = fillers[-1]
        with open(fill_more, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        writer.submit_records(records(5000, start=10**6))   # no room: counted, not stored
        with pytest.raises(store.StoreError) as failed:     # (a last write bigger than any slack)
            writer.finish(dict(summary(7000), environment={"note": "x" * 300_000}))
        assert "\n" not in str(failed.value) and "disk full" in str(failed.value)
        assert writer.store_failure == "disk full" and writer.dropped_records + writer.pending_records == 5000
        listed = json.loads(run_cli("runs", "--json", "--db", db).stdout)
        assert [(r["label"], r["status"]) for r in listed] == [(None, "interrupted"), ("earlier", "completed")]
        assert listed[0]["total_requests"] == 2000           # what it stored
        for filler in fillers:
            filler.unlink()
        conn = open_database(db)
        try:
            run = store.find_run(conn, run_id)
            assert run["status"] == "interrupted" and run["total_requests"] == 2000
        finally:
            conn.close()
        assert store.check(db) == ["ok"] and stored_rows(db, 1) == 100
