"""Looking after the file: online backup, checked restore, integrity check, stats, prune."""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import apsw

from loadtester.store.connection import (
    BUSY_TIMEOUT_MS,
    StoreError,
    error_reason,
    file_size,
    fsync_dir,
    open_reader,
    remove_quietly,
    same_file,
    sidecars,
    store_error,
    transaction,
    translated,
)
from loadtester.store.db import inspect_schema, open_database, prepare_parent
from loadtester.store.locks import lock_files, try_lock
from loadtester.store.migrations import check_header, read_header
from loadtester.store.spool import spool_files
from loadtester.units import iso_utc

if TYPE_CHECKING:
    from _typeshed import StrPath

BACKUP_STEP_PAGES = 1024


def _copy_database(src_conn: apsw.Connection, dest: pathlib.Path,
                   progress: Callable[[int, int], object] | None = None) -> tuple[int, int]:
    """Copy src_conn's database into a new file `dest` with the online backup API, in steps of
    BACKUP_STEP_PAGES pages, all read from one snapshot: the source's read transaction is held
    for the whole copy, so a writer committing meanwhile (WAL: it is never blocked) neither
    restarts the copy nor makes it inconsistent.  Returns (pages, steps).
    progress(copied_pages, total_pages), if given, is called after each step."""
    for p in (dest, *sidecars(dest)):
        remove_quietly(p)
    dest_conn = apsw.Connection(str(dest))
    pages = steps = 0
    try:
        src_conn.execute("BEGIN DEFERRED")
        try:
            src_conn.execute("SELECT count(*) FROM sqlite_schema").get     # noqa: B018 (pins the snapshot)
            with dest_conn.backup("main", src_conn, "main") as backup:
                while not backup.done:
                    try:
                        backup.step(BACKUP_STEP_PAGES)
                    except (apsw.BusyError, apsw.LockedError):
                        time.sleep(0.01)
                        continue
                    steps += 1
                    pages = backup.page_count or pages
                    if progress is not None:
                        progress(pages - backup.remaining, pages)
        finally:
            src_conn.execute("COMMIT")
        # A single self-contained file (rollback journal mode): nothing else to copy or lose,
        # and opening it read-only leaves no -wal/-shm behind.  open_database() turns WAL back on.
        dest_conn.pragma("journal_mode", "DELETE")
    finally:
        dest_conn.close()
    for p in sidecars(dest):                          # a WAL copy leaves none after close
        remove_quietly(p)
    return pages, steps


def backup(src_path: StrPath, dest_path: StrPath, *,
           progress: Callable[[int, int], object] | None = None) -> dict[str, Any]:
    """Consistent online copy of the database (even while a run writes) to dest_path.

    Written to dest + '.tmp', then renamed over dest; the copy is one self-contained file.
    progress(copied_pages, total_pages) is called after each step of BACKUP_STEP_PAGES pages.
    Returns {"path", "bytes", "pages", "steps", "seconds"}."""
    src, dest = pathlib.Path(src_path), pathlib.Path(dest_path)
    if same_file(src, dest):
        raise StoreError(f"backup destination {dest} is the database itself")
    if dest.is_dir():
        raise StoreError(f"backup destination {dest} is a directory; give a file name")
    if dest.exists():
        header = read_header(dest)
        if header:
            try:
                check_header(dest, header)
            except StoreError:
                raise StoreError(f"{dest} exists and is not a loadtester database; "
                                 "refusing to overwrite it") from None
    if not dest.parent.is_dir():
        what = "is not a directory" if dest.parent.exists() else "does not exist"
        raise StoreError(f"cannot write backup {dest}: directory {dest.parent} {what}")
    started = time.perf_counter()
    src_conn = open_database(src, readonly=True, create=False)
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        with translated(dest, "write backup"):
            pages, steps = _copy_database(src_conn, tmp, progress)
            for p in sidecars(dest)[:2]:              # they would belong to the old dest file
                remove_quietly(p)
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
    except BaseException:
        for p in (tmp, *sidecars(tmp)):
            with contextlib.suppress(OSError):
                remove_quietly(p)
        raise
    finally:
        src_conn.close()
    return {"path": str(dest), "bytes": file_size(dest), "pages": pages, "steps": steps,
            "seconds": time.perf_counter() - started}


def _integrity_problems(conn: apsw.Connection, quick: bool = False) -> list[str]:
    problems: list[str] = []
    for message, in conn.execute("PRAGMA quick_check" if quick else "PRAGMA integrity_check"):
        problems.extend(line.strip() for line in str(message).splitlines()
                        if line.strip() and not line.startswith("*** in database"))
    if problems == ["ok"]:
        problems = []
    for table, rowid, parent, _fk in conn.execute("PRAGMA foreign_key_check"):
        problems.append(f"foreign key: {table} row {rowid} refers to a missing {parent} row")
    return problems


def _held_run_locks(db: pathlib.Path) -> list[pathlib.Path]:
    """Lock files next to db that a live run still holds."""
    held = []
    for lock_path in lock_files(db):
        gone, fd = try_lock(lock_path)
        if fd is not None:
            os.close(fd)
        if not gone:
            held.append(lock_path)
    return held


def restore(src_path: StrPath, db_path: StrPath) -> pathlib.Path | None:
    """Replace the database with the backup src_path.

    The backup is checked first (ours, not newer, integrity ok); refused while a run is still
    writing.  The copy is made next to the database and renamed into place; the old database
    is kept as <db>.bak-<UTC timestamp> (returned; None when there was no old database)."""
    src, db = pathlib.Path(src_path), pathlib.Path(db_path)
    if not src.exists():
        raise StoreError(f"no backup at {src}")
    if db.exists() and same_file(src, db):
        raise StoreError(f"{src} is the database itself; nothing to restore")
    src_conn = open_database(src, readonly=True, create=False)
    try:
        with translated(src, "check backup"):
            problems = _integrity_problems(src_conn)
        if problems:
            raise StoreError(f"backup {src} failed its integrity check: {problems[0]}")
        held = _held_run_locks(db)
        if held:
            raise StoreError(f"a run is still writing to {db} ({held[0].name}); "
                             "wait for it to finish, then restore")
        prepare_parent(db)
        tmp = db.with_name(db.name + ".restore-tmp")
        try:
            with translated(db, "restore"):
                _copy_database(src_conn, tmp)
        except BaseException:
            remove_quietly(tmp, *sidecars(tmp))
            raise
    finally:
        src_conn.close()

    bak = None
    try:
        if db.exists():
            bak = _set_aside(db)
        os.replace(tmp, db)
        fsync_dir(db.parent)
    except StoreError:
        remove_quietly(tmp)
        raise
    except OSError as exc:
        remove_quietly(tmp)
        raise StoreError(f"cannot restore into {db}: {error_reason(exc)}") from exc
    # Bring an older backup's schema up to date and close out runs it caught mid-write.
    open_database(db).close()
    return bak


def _set_aside(db: pathlib.Path) -> pathlib.Path:
    """Keep the current database as <db>.bak-<stamp> (a hard link, so `db` itself stays in place
    until os.replace swaps the new file in) and clear its -wal/-shm, which belong to it."""
    wal, shm, _journal = sidecars(db)
    folded = False
    try:                                              # fold the old -wal into the old file
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READWRITE)
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        try:
            conn.execute("SELECT count(*) FROM sqlite_schema").get     # noqa: B018 (runs the query)
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
            folded = True
        finally:
            conn.close()                              # the last connection removes -wal and -shm
    except apsw.Error:
        pass
    if folded and wal.exists():
        raise StoreError(f"{db} is open in another process; stop it, then restore")
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    bak = db.with_name(f"{db.name}.bak-{stamp}")
    n = 1
    while bak.exists():
        n += 1
        bak = db.with_name(f"{db.name}.bak-{stamp}-{n}")
    try:
        os.link(db, bak)
    except OSError:
        shutil.copy2(db, bak)
    for side, suffix in ((wal, "-wal"), (shm, "-shm")):
        if side.exists():
            if not folded and suffix == "-wal":       # keep what a damaged file's WAL held
                shutil.copy2(side, bak.with_name(bak.name + suffix))
            remove_quietly(side)
    return bak


def check(path: StrPath, quick: bool = False) -> list[str]:
    """integrity_check (quick_check when quick) + foreign_key_check + our own invariants;
    ["ok"] when all is well."""
    path = pathlib.Path(path)
    header = read_header(path)
    if header is None:
        raise StoreError(f"no database at {path}")
    if header:
        check_header(path, header)
    _recover(path)
    try:
        conn = open_reader(path)
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        return [f"corrupt: {error_reason(exc)}"]
    except apsw.Error as exc:
        raise store_error(path, exc) from exc
    try:
        try:
            inspect_schema(conn, path)
        except (apsw.CorruptError, apsw.NotADBError) as exc:
            return [f"corrupt: {error_reason(exc)}"]
        try:
            problems = _integrity_problems(conn, quick)
            structural = [p for p in problems if not p.startswith("foreign key:")]
            if not structural and conn.pragma("user_version") >= 1:
                stored = conn.execute("SELECT count(*) FROM request_records").get
                covered = conn.execute(
                    "SELECT coalesce(sum(last_id - first_id + 1), 0) FROM request_batches").get
                if stored != covered:
                    problems.append(f"request_records holds {stored} rows but request_batches "
                                    f"account for {covered}")
        except (apsw.CorruptError, apsw.NotADBError) as exc:
            problems = [f"corrupt: {error_reason(exc)}"]
        except apsw.Error as exc:
            raise store_error(path, exc, "check") from exc
    finally:
        conn.close()
    return problems or ["ok"]


def _recover(path: pathlib.Path) -> None:
    """What dead writers left (a spool, a lock file) is stored and closed out first, when the
    database can be written; else the check goes on read-only."""
    if not (spool_files(path) or lock_files(path)):
        return
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
        return
    with contextlib.suppress(StoreError):
        open_database(path, create=False).close()


def stats(path: StrPath) -> dict[str, Any]:
    """Sizes of the files, counts of runs and rows, and on-disk bytes per request row."""
    path = pathlib.Path(path)
    wal, shm, _ = sidecars(path)
    sizes = {"db_bytes": file_size(path), "wal_bytes": file_size(wal), "shm_bytes": file_size(shm)}
    conn = open_database(path, readonly=True, create=False)      # (it may add a -shm of its own)
    try:
        with translated(path):
            page_size = conn.pragma("page_size")
            page_count = conn.pragma("page_count")
            out: dict[str, Any] = {
                "path": str(path),
                **sizes,
                "page_size": page_size,
                "page_count": page_count,
                "freelist_pages": conn.pragma("freelist_count"),
                "schema_version": conn.pragma("user_version"),
                "runs": conn.execute("SELECT count(*) FROM test_runs").get,
                "running_runs": conn.execute("SELECT count(*) FROM test_runs WHERE status = 'running'").get,
                "request_rows": conn.execute(
                    "SELECT coalesce(sum(last_id - first_id + 1), 0) FROM request_batches").get,
                "window_rows": conn.execute("SELECT count(*) FROM metric_windows").get,
            }
            out["total_bytes"] = out["db_bytes"] + out["wal_bytes"] + out["shm_bytes"]
            # What one run costs on disk, on average: the number to size a volume by.
            out["bytes_per_run"] = (round((page_count - out["freelist_pages"]) * page_size
                                          / out["runs"]) if out["runs"] else None)
            try:
                request_bytes = conn.execute(
                    "SELECT coalesce(sum(pgsize), 0) FROM dbstat "
                    "WHERE name IN ('request_records', 'request_batches') AND aggregate = 1").get
                source = "dbstat"
            except apsw.SQLError:                     # SQLite built without dbstat
                request_bytes = page_count * page_size
                source = "estimate (whole file)"
            out["request_table_bytes"] = request_bytes
            rows = out["request_rows"]
            out["bytes_per_request_row"] = round(request_bytes / rows, 2) if rows else None
            out["bytes_per_request_row_source"] = source
    finally:
        conn.close()
    return out


_PRUNE_BATCHES_PER_TXN = 64
_PRUNE_VICTIMS = ("FROM test_runs AS t WHERE status != 'running' "
                  "AND julianday(started_at) < julianday(?)")


def _cutoff_iso(older_than_s: float) -> str:
    """now - older_than_s as stored timestamps are written; an age past year 1 is year 1."""
    try:
        cutoff = _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=float(older_than_s))
    except (OverflowError, ValueError):
        cutoff = _dt.datetime.min.replace(tzinfo=_dt.UTC)
    return iso_utc(cutoff)


def prune_preview(path: StrPath, older_than_s: float) -> dict[str, int]:
    """What prune(path, older_than_s) would delete: {"runs", "of"} (of: runs stored)."""
    conn = open_database(path, readonly=True, create=False)
    try:
        with translated(path):
            victims = conn.execute(f"SELECT count(*) {_PRUNE_VICTIMS}", (_cutoff_iso(older_than_s),)).get
            total = conn.execute("SELECT count(*) FROM test_runs").get
    finally:
        conn.close()
    return {"runs": int(victims), "of": int(total)}


def _delete_run(conn: apsw.Connection, run_id: int) -> tuple[int, int]:
    """Delete run `run_id` with its rows: (request rows deleted, runs deleted: 0 or 1).
    Request rows go in transactions of a few batches each, checkpointing between them, so
    the -wal stays small however big the run is; the run row (and, by cascade, its windows)
    goes last."""
    rows = 0
    while True:
        with transaction(conn):
            batch = cast("list[tuple[int, int]]", conn.execute(
                "SELECT first_seq, last_id - first_id + 1 FROM request_batches "
                "WHERE test_run_id = ? ORDER BY first_seq LIMIT ?",
                (run_id, _PRUNE_BATCHES_PER_TXN)).fetchall())
            if not batch:
                break
            conn.executemany(
                "DELETE FROM request_batches WHERE test_run_id = ? AND first_seq = ?",
                ((run_id, first_seq) for first_seq, _ in batch))
            rows += sum(n for _, n in batch)
        with contextlib.suppress(apsw.BusyError, apsw.LockedError):
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
    with transaction(conn):
        conn.execute("DELETE FROM test_runs WHERE id = ?", (run_id,))
        return rows, conn.changes()


def delete_run(path: StrPath, run_uuid: str) -> bool:
    """Delete the finished run stored under `run_uuid`, with its rows; False when there is no
    such run.  A running run is refused (StoreError): its blast still writes it."""
    path = pathlib.Path(path)
    conn = open_database(path, create=False)
    try:
        with translated(path, "delete"):
            found = cast("list[tuple[int, str]]", conn.execute(
                "SELECT id, status FROM test_runs WHERE uuid = ?", (run_uuid,)).fetchall())
            if not found:
                return False
            run_id, status = found[0]
            if status == "running":
                raise StoreError(f"run {run_uuid} is still running: stop it first")
            _delete_run(conn, int(run_id))
            with contextlib.suppress(apsw.BusyError, apsw.LockedError):
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
            return True
    finally:
        conn.close()


def prune(path: StrPath, older_than_s: float | None, vacuum: bool = False) -> dict[str, Any]:
    """Delete finished runs started more than older_than_s seconds ago, with their rows.

    Each run goes as _delete_run deletes one (the -wal stays small however big it is)."""
    if older_than_s is None or older_than_s < 0:
        raise StoreError("--older-than must be a positive duration")
    path = pathlib.Path(path)
    cutoff_iso = _cutoff_iso(older_than_s)
    conn = open_database(path, create=False)
    before = file_size(path) + file_size(sidecars(path)[0])
    runs = rows = windows = 0
    try:
        with translated(path, "prune"):
            victims = cast("list[tuple[int, int]]", conn.execute(
                "SELECT id, (SELECT count(*) FROM metric_windows WHERE test_run_id = t.id) "
                f"{_PRUNE_VICTIMS} ORDER BY id", (cutoff_iso,)).fetchall())
            for run_id, n_windows in victims:
                deleted_rows, deleted = _delete_run(conn, run_id)
                rows += deleted_rows
                runs += deleted
                windows += n_windows
            if vacuum:
                conn.execute("VACUUM")
            with contextlib.suppress(apsw.BusyError, apsw.LockedError):
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
    finally:
        conn.close()
    after = file_size(path) + file_size(sidecars(path)[0])
    return {"runs_deleted": runs, "rows_deleted": rows, "windows_deleted": windows,
            "vacuumed": bool(vacuum), "bytes_before": before, "bytes_after": after}
