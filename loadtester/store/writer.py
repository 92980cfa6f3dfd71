"""RunWriter: one run's rows, written off the hot path (a named spool, one thread)."""
from __future__ import annotations

import collections
import contextlib
import os
import pathlib
import queue
import threading
import time
import uuid as _uuid
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import apsw

from loadtester.model import RECORD_SIZE, RUN_STATUSES, STORE_MODES, Window
from loadtester.store import locks, rows
from loadtester.store.connection import (
    JOURNAL_SIZE_LIMIT,
    StoreError,
    configure,
    connect,
    error_reason,
    store_error,
    table_columns,
    transaction,
)
from loadtester.store.db import open_database
from loadtester.store.spool import HEADER, KIND_RECORDS, KIND_WINDOW, Spool, encode_window, spool_path
from loadtester.units import utc_now_iso

if TYPE_CHECKING:
    from _typeshed import StrPath


_STOP = object()
_RECORDS = 0
_WINDOW = 1
WRITER_NICE = 19                     # the writer thread yields to the load generator
SPOOL_LIMIT_BYTES = 4 << 30          # rows waiting in the spool file, not yet in the database
TXN_RECORD_BYTES = 256 << 10         # ~10,900 rows per transaction
WINDOW_QUEUE_MAX = 1 << 16
IDLE_POLL_S = 0.05
RETRY_AFTER_S = 0.25                 # a full disk (or a lock held too long): wait, then retry
FINISH_RETRY_S = 1.0                 # ... and at the end, for this long before giving up
FINISH_BUSY_RETRY_S = 20.0           # (another writer's lock: as long as 4 busy timeouts)
# A nice'd writer that falls this far behind (the generator has the CPU) leaves the records in
# the spool until the appends pause or the run ends, and writes only windows meanwhile.  Not
# only to stay out of the generator's way: a thread at nice 19 preempted while it holds the
# GIL stalls every thread of the process, the ones reading the workers' pipes included.
DEFER_BACKLOG_BYTES = 4 << 20
QUIET_S = 0.5
# Failures that may pass (a full disk, another writer): the rows stay in the spool, retried.
_TRANSIENT = (apsw.FullError, apsw.IOError, apsw.BusyError, apsw.CantOpenError)


class RunWriter:
    """Writes one run: its test_runs row, request rows and windows, off the hot path.

        writer = RunWriter(db_path, store_mode="requests")
        run_id, run_uuid = writer.begin({"url": ..., "mode": "closed", ...})
        writer.submit_records(blob)      # never blocks: one append to the spool file
        writer.submit_window(window)     # never blocks
        writer.finish(result, status="completed")

    Records and windows are appended to the run's named spool file (`<db>.spool-<uuid>`) by
    the thread that submits them; one writer thread moves them into SQLite (windows first:
    the live view reads them).  After kill -9 the next writable open stores what the spool
    still holds.  When the spool cannot take a buffer (spool_limit_bytes of backlog, a full
    disk) it waits in memory (queue_batches buffers), then is dropped and counted.  A full
    disk leaves rows in the spool and retries; what is still unstored at the end stays there
    for the next open, and is counted (pending_records, pending_windows)."""

    def __init__(self, path: StrPath, *, store_mode: str = "requests", queue_batches: int = 16,
                 wal_bound_bytes: int = 64 << 20, spool_limit_bytes: int = SPOOL_LIMIT_BYTES,
                 writer_nice: int = WRITER_NICE) -> None:
        if store_mode not in STORE_MODES:
            raise ValueError(f"store_mode must be one of {STORE_MODES}, not {store_mode!r}")
        self.path = pathlib.Path(path)
        self.store_mode = store_mode
        self.wal_bound_bytes = max(int(wal_bound_bytes), 64 << 10)
        # Several buffers are coalesced into one transaction, up to this much record data:
        # a backlog drains with fewer commits, yet windows never wait long behind records.
        self._txn_bytes = max(RECORD_SIZE, min(TXN_RECORD_BYTES, self.wal_bound_bytes // 8))
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=WINDOW_QUEUE_MAX)   # (_WINDOW, w), _STOP
        self._records: collections.deque[bytes] = collections.deque()          # spool refused them
        self._records_max = max(1, int(queue_batches))
        self._lock = threading.Lock()
        self._spool_limit = max(0, int(spool_limit_bytes))
        self._spool: Spool | None = None
        self._read_pos = HEADER.size                  # writer thread: spool taken up to here
        self._retry_windows: list[tuple[int, Any]] = []
        self._retry_at = 0.0
        self._busy = False
        self._seen_end = 0
        self._grew_at = 0.0
        self.deferred = False           # the writer let a backlog wait (see DEFER_BACKLOG_BYTES)
        self.spooled_records = 0        # rows that went through the spool file
        self.spool_error: str | None = None            # why the spool refused a buffer, if it did
        self._nice = int(writer_nice)
        self._accept_records = store_mode == "requests"
        self._accept_windows = store_mode in ("requests", "windows")
        self._drop_lock = threading.Lock()
        self._queue_dropped_records = 0
        self._write_dropped_records = 0
        self.dropped_batches = 0        # record batches not stored (no room, or a write failed)
        self.dropped_windows = 0
        self.duplicate_windows = 0      # (worker, second) already stored: kept the first
        self.rows_written = 0
        self.windows_written = 0
        self.write_errors = 0
        self.retries = 0                # transactions put off by a full disk or a held lock
        self.last_error: str | None = None
        self.pending_records = 0        # at the end: rows left in the spool for the next open
        self.pending_windows = 0        # at the end: windows not stored (some in the spool)
        self.store_failure: str | None = None         # why rows went unstored (a full disk)
        self.spool_path: pathlib.Path | None = None
        self.checkpoints = 0
        self.max_wal_bytes = 0          # largest -wal size seen after a write
        self._run_id: int | None = None
        self._uuid: str | None = None
        self._conn: apsw.Connection | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._thread_error: BaseException | None = None
        self._lock_fd: int | None = None
        self._lock_path: pathlib.Path | None = None
        self._seq = 0
        self._wal_path = self.path.with_name(self.path.name + "-wal")
        self._finished = False

    # -- public state
    @property
    def run_id(self) -> int | None:
        return self._run_id

    @property
    def uuid(self) -> str | None:
        return self._uuid

    @property
    def dropped_records(self) -> int:
        """Request rows not stored and not kept: no room anywhere, or their transaction failed."""
        return self._queue_dropped_records + self._write_dropped_records

    @property
    def spool_file(self) -> pathlib.Path | None:
        """The spool file while the run writes."""
        return self._spool.path if self._spool is not None else None

    # -- lifecycle
    def begin(self, run: dict[str, Any]) -> tuple[int, str]:
        """Insert the test_runs row (status 'running'), take the run lock, start the writer."""
        if self._run_id is not None:
            raise RuntimeError("RunWriter.begin() was already called")
        conn = open_database(self.path)
        try:
            columns = set(table_columns(conn, "test_runs")) - {"id"}
            unknown = sorted(set(run) - columns)
            if unknown:
                raise ValueError(f"unknown test_runs column(s): {', '.join(unknown)}")
            values = {k: rows.encode_value(v) for k, v in run.items()}
            values["uuid"] = str(values.get("uuid") or _uuid.uuid4())
            values["started_at"] = values.get("started_at") or utc_now_iso()
            values["status"] = "running"
            values.setdefault("store_mode", self.store_mode)
            names = list(values)
            sql = (f"INSERT INTO test_runs ({', '.join(names)}) "
                   f"VALUES ({', '.join(':' + n for n in names)})")
            lock_path = locks.run_lock_path(self.path, values["uuid"])
            try:
                with transaction(conn):
                    conn.execute(sql, values)
                    run_id = conn.last_insert_rowid()
                    # The lock is held before the row is visible to anyone else.
                    self._lock_fd = locks.acquire(lock_path)
                    self._lock_path = lock_path
            except apsw.ConstraintError as exc:
                self._release_lock()
                raise ValueError(f"invalid test_runs values: {error_reason(exc)}") from exc
            except apsw.Error as exc:
                self._release_lock()
                raise store_error(self.path, exc, "write") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._run_id, self._uuid = run_id, values["uuid"]
        if self.store_mode != "none":
            if self._spool_limit:
                try:
                    self._spool = Spool(spool_path(self.path, self._uuid), self._uuid)
                    self.spool_path = self._spool.path
                except OSError as exc:                # rows wait in memory instead
                    self.spool_error = error_reason(exc, self.path)
            self._thread = threading.Thread(target=self._thread_main, name=f"loadtester-store-{run_id}",
                                            daemon=True)
            self._thread.start()
            self._ready.wait()
            if self._thread_error is not None:
                error = self._thread_error
                self._thread.join()
                self._thread = None
                with contextlib.suppress(Exception):
                    self.finish({"stop_reason": f"store writer failed: {error_reason(error)}"},
                                status="failed")
                if isinstance(error, StoreError):
                    raise error
                raise store_error(self.path, error, "write")
        return run_id, values["uuid"]

    def _release_lock(self) -> None:
        locks.release(self._lock_fd, self._lock_path)
        self._lock_fd = None
        self._lock_path = None

    def submit_records(self, blob: bytes) -> None:
        """Hand over one buffer of packed request records.  Never blocks."""
        if not self._accept_records:
            return
        size = len(blob)
        if size % RECORD_SIZE:
            raise ValueError(f"record buffer of {size} bytes is not a multiple of {RECORD_SIZE}")
        if self._thread is None or self._finished:
            if self._run_id is None:
                raise RuntimeError("RunWriter.submit_records() before begin()")
            self._count_dropped(size // RECORD_SIZE)
            return
        with self._lock:
            spool = self._spool
            if spool is not None and spool.end - self._read_pos + size <= self._spool_limit:
                try:
                    spool.append(KIND_RECORDS, blob)
                except OSError as exc:
                    self.spool_error = self.spool_error or error_reason(exc, self.path)
                else:
                    self.spooled_records += size // RECORD_SIZE
                    return
            if len(self._records) < self._records_max:
                self._records.append(blob)
                return
        self._count_dropped(size // RECORD_SIZE)

    def submit_window(self, window: Window) -> None:
        """Hand over one closed per-second window.  Never blocks."""
        if not self._accept_windows:
            return
        if self._thread is None or self._finished:
            if self._run_id is None:
                raise RuntimeError("RunWriter.submit_window() before begin()")
            with self._drop_lock:
                self.dropped_windows += 1
            return
        payload = None
        if self._spool is not None:
            with contextlib.suppress(AttributeError, KeyError, TypeError, ValueError):
                payload = encode_window(window)
        with self._lock:
            if payload is not None and self._spool is not None:
                try:
                    self._spool.append(KIND_WINDOW, payload)
                except OSError as exc:
                    self.spool_error = self.spool_error or error_reason(exc, self.path)
            try:
                self._queue.put_nowait((_WINDOW, window))
                return
            except queue.Full:
                pass
        with self._drop_lock:
            self.dropped_windows += 1

    def _count_dropped(self, records: int) -> None:
        with self._drop_lock:
            self.dropped_batches += 1
            self._queue_dropped_records += records

    def finish(self, result: dict[str, Any], status: str = "completed") -> None:
        """Store what is left, write the summary and status, checkpoint, release the run lock.
        StoreError when the database could not take it all (a full disk): what is unstored is
        counted (pending_records, pending_windows, dropped_records) and the spool stays for
        the next open."""
        if self._finished:
            return
        if self._run_id is None:
            raise RuntimeError("RunWriter.finish() before begin()")
        if status not in RUN_STATUSES or status == "running":
            raise ValueError(f"finish status must be one of {RUN_STATUSES[1:]}, not {status!r}")
        if self._thread is not None:
            while self._thread.is_alive():            # may wait for room: not the hot path
                try:
                    self._queue.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
            self._thread = None
        self._finished = True
        self._close_spool()
        if self.pending_records or self.pending_windows or (self.spool_error and self.dropped_records):
            self.store_failure = self.last_error or self.spool_error
            status = "failed"
            reason = result.get("stop_reason")
            result = dict(result, stop_reason=(f"{reason}; " if reason else "") + (
                f"store failed: {self.store_failure} ({self.dropped_records + self.pending_records:,} "
                f"request rows, {self.dropped_windows + self.pending_windows:,} windows not stored)"))
        conn = cast(apsw.Connection, self._conn)      # (set by begin(), until now)
        unknown: list[str] = []
        try:
            columns = set(table_columns(conn, "test_runs")) - {"id", "uuid", "status"}
            unknown = sorted(set(result) - columns - {"id", "uuid", "status"})
            values = {k: rows.encode_value(v) for k, v in result.items() if k in columns}
            values["completed_at"] = values.get("completed_at") or utc_now_iso()
            values["dropped_records"] = (int(values.get("dropped_records") or 0) + self.dropped_records
                                         + self.pending_records)
            sets = ", ".join(f"{n} = :{n}" for n in values)
            values["_id"] = self._run_id
            values["_status"] = status
            locks.give_back_reserve(self._lock_fd)    # room for this last write on a full disk
            with transaction(conn):
                conn.execute(f"UPDATE test_runs SET {sets}, status = :_status WHERE id = :_id", values)
            with contextlib.suppress(*_TRANSIENT, apsw.LockedError):
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
        except apsw.ConstraintError as exc:
            raise ValueError(f"invalid test_runs values: {error_reason(exc)}") from exc
        except apsw.Error as exc:
            self.last_error = error_reason(exc, self.path)
            raise store_error(self.path, exc, "write") from exc
        finally:
            self._release_lock()
            conn.close()
            self._conn = None
        if unknown:
            raise ValueError(f"unknown test_runs column(s) ignored: {', '.join(unknown)}")

    def _close_spool(self) -> None:
        """After the writer thread: count what it could not store; keep the spool if any of
        it is there (the next open stores it), else delete it."""
        with self._lock:
            leftover = list(self._records)
            self._records.clear()
        if leftover:
            with self._drop_lock:
                self.dropped_batches += len(leftover)
                self._queue_dropped_records += sum(len(b) // RECORD_SIZE for b in leftover)
        self.pending_windows = len(self._retry_windows) + self._queue.qsize()
        spool, self._spool = self._spool, None
        if spool is None:
            return
        pos = self._read_pos
        with contextlib.suppress(OSError):
            while pos < spool.end:
                kind, payload, pos = spool.read(pos)
                if kind == KIND_RECORDS:
                    self.pending_records += len(payload) // RECORD_SIZE
        if self.pending_records or self.pending_windows:
            spool.close()                             # kept: the next open stores what it holds
        else:
            spool.remove()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._run_id is not None and not self._finished:
            self.finish({"stop_reason": f"{exc_type.__name__}: {exc}"} if exc_type else {},
                        status="failed" if exc_type else "completed")

    # -- the writer thread
    def _thread_main(self) -> None:
        if self._nice:
            # Below the load generator: while it is busy the rows wait in the spool and are
            # written when it is idle or done, instead of taking its CPU.
            with contextlib.suppress(OSError, AttributeError):
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid,
                               min(19, os.getpriority(os.PRIO_PROCESS, tid) + self._nice))
        try:
            conn = connect(self.path, readonly=False)
            configure(conn, readonly=False,
                      journal_size_limit=min(JOURNAL_SIZE_LIMIT, self.wal_bound_bytes))
            conn.wal_autocheckpoint(0)                # our policy instead, see _after_write
            self._wal_path = pathlib.Path(conn.filename_wal)
        except BaseException as exc:                  # reported by begin()
            self._thread_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop(conn)
        except Exception as exc:                      # what is left is counted by finish()
            self.last_error = " ".join(f"{type(exc).__name__}: {exc}".split())
        finally:
            conn.close()

    def _collect(self, windows: list[tuple[int, Any]], timeout: float) -> bool:
        """Queued windows into `windows`; True when the stop signal came."""
        stop = False
        try:
            item = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
            while True:
                if item is _STOP:
                    stop = True
                else:
                    windows.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return stop

    def _loop(self, conn: apsw.Connection) -> None:
        stopping = False
        stopped_at = give_up_at = 0.0
        idle = False
        while True:
            windows, self._retry_windows = self._retry_windows, []
            if self._collect(windows, IDLE_POLL_S if idle else 0) and not stopping:
                stopping = True
                stopped_at = time.monotonic()
            if stopping:
                give_up_at = stopped_at + (FINISH_BUSY_RETRY_S if self._busy else FINISH_RETRY_S)
            if time.monotonic() < self._retry_at:     # a full disk: wait a little
                self._retry_windows = windows
                if stopping and time.monotonic() >= give_up_at:
                    return
                idle = True
                continue
            moved = False
            if windows:
                if self._write(conn, windows) == "retry":
                    self._retry_windows = windows + self._retry_windows
                else:
                    moved = True
                    self._after_write(conn)
            if time.monotonic() >= self._retry_at and not self._deferring(stopping):
                moved = self._move_records(conn) or moved
            if stopping and not moved and self._drained():
                return
            if stopping and time.monotonic() >= give_up_at and time.monotonic() < self._retry_at:
                return
            idle = not moved

    def _deferring(self, stopping: bool) -> bool:
        spool = self._spool
        if stopping or not self._nice or spool is None:
            return False
        now = time.monotonic()
        end = spool.end
        if end != self._seen_end:
            self._seen_end, self._grew_at = end, now
        if end - self._read_pos > DEFER_BACKLOG_BYTES and now - self._grew_at < QUIET_S:
            self.deferred = True
            return True
        return False

    def _drained(self) -> bool:
        with self._lock:
            return (not self._records and not self._retry_windows
                    and (self._spool is None or self._read_pos >= self._spool.end))

    def _move_records(self, conn: apsw.Connection) -> bool:
        """One transaction of record buffers (memory first, then the spool); False if none."""
        with self._lock:
            memory = []
            size = 0
            while self._records and size < self._txn_bytes:
                memory.append(self._records.popleft())
                size += len(memory[-1])
            spool = self._spool
            end = spool.end if spool is not None else 0
        blobs = list(memory)
        pos = self._read_pos
        if spool is not None:
            while pos < end and size < self._txn_bytes:
                kind, payload, pos = spool.read(pos)   # (below end: whole frames, ours)
                if kind == KIND_RECORDS:
                    blobs.append(payload)
                    size += len(payload)
        if not blobs and pos == self._read_pos:
            return False
        mark = spool.logical(pos) if spool is not None and pos != self._read_pos else None
        outcome = self._write(conn, [(_RECORDS, b) for b in blobs], mark) if blobs else "ok"
        if outcome == "retry":
            with self._lock:
                self._records.extendleft(reversed(memory))
            return False
        self._read_pos = pos
        if spool is not None:
            self._tidy_spool(spool)
        if blobs:
            self._after_write(conn)
        return True

    def _tidy_spool(self, spool: Spool) -> None:
        """Give the stored part of the spool back to the filesystem: empty the file when all
        of it is stored, else punch the stored front out.  Only with no window waiting (a
        window's frame may be behind the records stored after it)."""
        with self._lock:
            if self._retry_windows or not self._queue.empty():
                return
            if self._read_pos >= spool.end:
                with contextlib.suppress(OSError):
                    spool.reset()
                    self._read_pos = HEADER.size
                return
        with contextlib.suppress(OSError):
            spool.release(self._read_pos)

    def _write(self, conn: apsw.Connection, items: list[tuple[int, Any]], mark: int | None = None) -> str:
        """One transaction: 'ok', 'retry' (a full disk or a held lock: nothing counted, the
        caller keeps the items) or 'dropped' (SQLite refused them: counted as lost)."""
        seq = self._seq
        n_rows = n_windows = duplicates = bad = 0
        try:
            with transaction(conn):
                for kind, payload in items:
                    if kind == _RECORDS:
                        n = rows.insert_records(conn, cast(int, self._run_id), payload, seq)
                        seq += n
                        n_rows += n
                        continue
                    outcome = rows.insert_window(conn, cast(int, self._run_id), payload)
                    if outcome == "ok":
                        n_windows += 1
                    elif outcome == "duplicate":
                        duplicates += 1
                    else:
                        bad += 1
                if mark is not None:
                    rows.mark_spooled(conn, cast(int, self._run_id), mark)
        except _TRANSIENT as exc:
            self.last_error = error_reason(exc, self.path)
            self._busy = isinstance(exc, apsw.BusyError)
            self.retries += 1
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            return "retry"
        except Exception as exc:                      # never let the writer thread die
            self.last_error = " ".join(f"{type(exc).__name__}: {exc}".split())
            self.write_errors += 1
            lost_records = sum(len(p) // RECORD_SIZE for k, p in items if k == _RECORDS)
            with self._drop_lock:
                self._write_dropped_records += lost_records
                self.dropped_batches += sum(1 for k, _ in items if k == _RECORDS)
                self.dropped_windows += sum(1 for k, _ in items if k == _WINDOW)
            return "dropped"
        self._seq = seq
        self.rows_written += n_rows
        self.windows_written += n_windows
        self.duplicate_windows += duplicates
        if bad:
            with self._drop_lock:
                self.dropped_windows += bad
        return "ok"

    def _after_write(self, conn: apsw.Connection) -> None:
        """Our checkpoint policy: PASSIVE once the -wal passes half its bound."""
        try:
            size = os.stat(self._wal_path).st_size
        except OSError:
            return
        if size > self.max_wal_bytes:
            self.max_wal_bytes = size
        if size > self.wal_bound_bytes // 2:
            try:
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                self.checkpoints += 1
            except apsw.Error as exc:
                self.last_error = error_reason(exc, self.path)
