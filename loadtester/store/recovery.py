"""What a writable open does about writers that are gone (killed, crashed, out of disk):

1. replays each spool whose run lock nobody holds into its run (records past the run's
   `spooled` offset, every window), then deletes the spool;
2. marks runs left 'running' by a writer that is gone as 'interrupted', with the totals their
   stored windows (else request rows) add up to;
3. removes run lock files nobody holds whose run is not running (a writer killed between
   finishing its run and unlinking its lock).

All of it is best effort: a spool that cannot be stored now (a full disk) stays for the next
open, and nothing here makes the open fail."""
from __future__ import annotations

import contextlib
import os
import pathlib
import struct
from typing import TYPE_CHECKING, Any, cast

import apsw

from loadtester.model import RECORD_SIZE
from loadtester.store import rows
from loadtester.store.connection import StoreError, remove_quietly, transaction
from loadtester.store.locks import lock_files, lock_uuid, run_lock_path, try_lock
from loadtester.store.queries import DEAD_WRITER_REASON as STOP_REASON, partial_totals
from loadtester.store.spool import KIND_RECORDS, KIND_WINDOW, decode_window, read_frames, spool_files
from loadtester.units import utc_now_iso

if TYPE_CHECKING:
    from _typeshed import StrPath

WINDOWS_PER_TXN = 512


def recover(conn: apsw.Connection, path: StrPath) -> dict[str, int]:
    """Replay, reap, tidy (see the module); returns what it did."""
    done = {"replayed_rows": 0, "replayed_windows": 0, "reaped": 0, "locks_removed": 0,
            "spools_left": 0}
    for run_uuid, spool in spool_files(path):
        gone, fd = try_lock(run_lock_path(path, run_uuid))
        if not gone:
            continue                                  # its writer is alive
        try:
            replayed = replay(conn, run_uuid, spool)
        except (StoreError, apsw.Error, OSError):
            replayed = None
        finally:
            if fd is not None:
                os.close(fd)
        if replayed is None:
            done["spools_left"] += 1
        else:
            done["replayed_rows"] += replayed[0]
            done["replayed_windows"] += replayed[1]
    with contextlib.suppress(StoreError, apsw.Error, OSError):
        done["reaped"] = len(_reap(conn, path))
    with contextlib.suppress(StoreError, apsw.Error, OSError):
        done["locks_removed"] = _remove_stale_locks(conn, path)
    return done


def replay(conn: apsw.Connection, run_uuid: str, spool: pathlib.Path) -> tuple[int, int] | None:
    """Store what the spool holds and the database does not; delete the spool.  None (and the
    spool kept) when its run is not in this database or it could not all be stored."""
    found = conn.execute("SELECT id, coalesce(spooled, 0), status FROM test_runs WHERE uuid = ?",
                         (run_uuid,)).fetchone()
    if found is None:
        return None                                   # not ours to place: leave it alone
    run_id, spooled, status = cast("tuple[int, int, str]", found)
    seq = rows.next_seq(conn, run_id)
    n_rows = n_windows = 0
    windows: list[Any] = []

    def store_windows() -> None:
        nonlocal n_windows
        with transaction(conn):
            for window in windows:
                if rows.insert_window(conn, run_id, window) == "ok":
                    n_windows += 1
        windows.clear()

    for end, kind, payload in read_frames(spool, run_uuid):
        if kind == KIND_WINDOW:
            with contextlib.suppress(ValueError, KeyError, TypeError, struct.error):
                windows.append(decode_window(payload))
            if len(windows) >= WINDOWS_PER_TXN:
                store_windows()
            continue
        if kind != KIND_RECORDS or end <= spooled or len(payload) % RECORD_SIZE:
            continue
        try:
            with transaction(conn):
                n = rows.insert_records(conn, run_id, payload, seq)
                rows.mark_spooled(conn, run_id, end)
                if status != "running":               # counted as not stored when it ended
                    conn.execute("UPDATE test_runs SET dropped_records = max(0, dropped_records - ?) "
                                 "WHERE id = ?", (n, run_id))
        except (apsw.FullError, apsw.IOError, apsw.BusyError, apsw.CantOpenError):
            raise
        except (apsw.Error, StoreError, OverflowError, ValueError):
            continue                                  # a batch SQLite refuses: skipped, as live
        seq += n
        n_rows += n
        with contextlib.suppress(apsw.Error):
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
    if windows:
        store_windows()
    if status == "interrupted" and (n_rows or n_windows):
        _settle(conn, run_id)                          # its totals, from what it now holds
    remove_quietly(spool)
    return n_rows, n_windows


def _settle(conn: apsw.Connection, run_id: int) -> None:
    """Totals of a run without a summary, from its stored windows (else request rows)."""
    with transaction(conn):
        totals = partial_totals(conn, run_id)
        conn.execute("UPDATE test_runs SET total_requests = :total_requests, "
                     "success_count = :success_count, error_count = :error_count, bytes = :bytes "
                     "WHERE id = :id AND latency_hist IS NULL", dict(totals, id=run_id))


def _reap(conn: apsw.Connection, path: StrPath) -> list[int]:
    """Mark runs left 'running' by a writer that is gone as 'interrupted'; return their ids."""
    reaped = []
    running = cast("list[tuple[int, str]]",
                   conn.execute("SELECT id, uuid FROM test_runs WHERE status = 'running'").fetchall())
    for run_id, run_uuid in running:
        lock_path = run_lock_path(path, run_uuid)
        gone, fd = try_lock(lock_path)
        if not gone:
            continue
        try:
            with transaction(conn):
                totals = partial_totals(conn, run_id)
                conn.execute(
                    "UPDATE test_runs SET status = 'interrupted', completed_at = :now, "
                    "stop_reason = coalesce(stop_reason, :reason), "
                    "total_requests = coalesce(total_requests, :total_requests), "
                    "success_count = coalesce(success_count, :success_count), "
                    "error_count = coalesce(error_count, :error_count), "
                    "bytes = coalesce(bytes, :bytes) WHERE id = :id AND status = 'running'",
                    dict(totals, now=utc_now_iso(), reason=STOP_REASON, id=run_id))
                if conn.changes():
                    reaped.append(run_id)
            if fd is not None:
                remove_quietly(lock_path)
        finally:
            if fd is not None:
                os.close(fd)
    return reaped


def _remove_stale_locks(conn: apsw.Connection, path: StrPath) -> int:
    """Lock files nobody holds whose run is not running.  Under the write lock: a writer
    creates its lock file inside the transaction that inserts its run, so none is being made."""
    removed = 0
    candidates = lock_files(path)
    if not candidates:
        return 0
    with transaction(conn):
        for lock_path in candidates:
            gone, fd = try_lock(lock_path)
            if fd is None:
                continue
            try:
                status = conn.execute("SELECT status FROM test_runs WHERE uuid = ?",
                                      (lock_uuid(path, lock_path),)).get
                if status != "running":
                    remove_quietly(lock_path)
                    removed += 1
            finally:
                os.close(fd)
    return removed
