"""RunWriter: one run's rows, written off the hot path (a queue, a spool, one thread)."""
from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import pathlib
import queue
import struct
import tempfile
import threading
import uuid as _uuid
from collections.abc import Mapping
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, cast

import apsw

from loadtester.model import ERROR_KINDS, RECORD_SIZE, RUN_STATUSES, STORE_MODES, Window
from loadtester.store.connection import (
    JOURNAL_SIZE_LIMIT,
    StoreError,
    configure,
    connect,
    error_reason,
    remove_quietly,
    store_error,
    table_columns,
    transaction,
)
from loadtester.store.db import open_database, run_lock_path
from loadtester.units import utc_now_iso

if TYPE_CHECKING:
    from _typeshed import StrPath


# Run-lock descriptors this process holds.  A forked child (the runner forks its workers) must
# not keep them: the flock would outlive a killed parent, and its run would never be reaped.
_HELD_LOCK_FDS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD_LOCK_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)                              # the parent's copy keeps the lock
    _HELD_LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


_STOP = object()
_RECORDS = 0
_WINDOW = 1
_SPOOL_LENGTH = struct.Struct("<I")
WRITER_NICE = 19                     # the writer thread yields to the load generator
SPOOL_LIMIT_BYTES = 4 << 30          # rows waiting on disk beyond the in-memory queue
TXN_RECORD_BYTES = 256 << 10         # ~10,900 rows per transaction
WINDOW_QUEUE_MAX = 1 << 16
IDLE_POLL_S = 0.05
# The same 24 bytes read with status | error << 16 | worker << 24 as one uint32: the stored `code`.
_ROW = struct.Struct("<QIIII")
_INSERT_RECORDS = ("INSERT INTO request_records (timestamp, latency, wait_us, bytes, code) "
                   "VALUES (?, ?, ?, ?, ?)")
_INSERT_BATCH = "INSERT INTO request_batches (test_run_id, first_seq, first_id, last_id) VALUES (?, ?, ?, ?)"
_INSERT_WINDOW = """
INSERT INTO metric_windows (test_run_id, worker, second, requests, successes, errors, error_kinds,
                            bytes, status_codes, latency_hist, service_hist, loop_lag_us,
                            max_wait_us, in_flight, cpu_us)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _encode_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return _json_text(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return value


class RunWriter:
    """Writes one run: its test_runs row, request rows and windows, off the hot path.

        writer = RunWriter(db_path, store_mode="requests")
        run_id, run_uuid = writer.begin({"url": ..., "mode": "closed", ...})
        writer.submit_records(blob)      # never blocks; drops (counted) when the queue is full
        writer.submit_window(window)     # never blocks
        writer.finish(result, status="completed")
    """

    def __init__(self, path: StrPath, *, store_mode: str = "requests", queue_batches: int = 16,
                 wal_bound_bytes: int = 64 << 20, spool_limit_bytes: int = SPOOL_LIMIT_BYTES,
                 writer_nice: int = WRITER_NICE) -> None:
        if store_mode not in STORE_MODES:
            raise ValueError(f"store_mode must be one of {STORE_MODES}, not {store_mode!r}")
        self.path = pathlib.Path(path)
        self.store_mode = store_mode
        self.wal_bound_bytes = max(int(wal_bound_bytes), 64 << 10)
        # Several queued batches are coalesced into one transaction, up to this much record data:
        # a backlog drains with fewer commits, yet windows never wait long behind records.
        self._txn_bytes = max(RECORD_SIZE, min(TXN_RECORD_BYTES, self.wal_bound_bytes // 8))
        # Windows (and the stop signal) have a queue of their own and go first: the live view
        # reads them. Record buffers wait in memory (queue_batches of them), then in an unnamed
        # spool file beside the database (spool_limit_bytes), then are dropped and counted.
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=WINDOW_QUEUE_MAX)   # (_WINDOW, w), _STOP
        self._records: collections.deque[bytes] = collections.deque()
        self._records_max = max(1, int(queue_batches))
        self._records_lock = threading.Lock()
        self._spool_limit = max(0, int(spool_limit_bytes))
        self._spool: IO[bytes] | None = None
        self._spool_read = self._spool_write = 0
        self._spilling = False
        self.spilled_records = 0        # rows that waited in the spool file (all stored later)
        self._nice = int(writer_nice)
        self._accept_records = store_mode == "requests"
        self._accept_windows = store_mode in ("requests", "windows")
        self._drop_lock = threading.Lock()
        self._queue_dropped_records = 0
        self._write_dropped_records = 0
        self.dropped_batches = 0        # record batches not stored (queue full or write failed)
        self.dropped_windows = 0
        self.duplicate_windows = 0      # (worker, second) already stored: kept the first
        self.rows_written = 0
        self.windows_written = 0
        self.write_errors = 0
        self.last_error: str | None = None
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
        """Request rows not stored: queue full, or their transaction failed."""
        return self._queue_dropped_records + self._write_dropped_records

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
            values = {k: _encode_value(v) for k, v in run.items()}
            values["uuid"] = str(values.get("uuid") or _uuid.uuid4())
            values["started_at"] = values.get("started_at") or utc_now_iso()
            values["status"] = "running"
            values.setdefault("store_mode", self.store_mode)
            names = list(values)
            sql = (f"INSERT INTO test_runs ({', '.join(names)}) "
                   f"VALUES ({', '.join(':' + n for n in names)})")
            lock_path = run_lock_path(self.path, values["uuid"])
            try:
                with transaction(conn):
                    conn.execute(sql, values)
                    run_id = conn.last_insert_rowid()
                    # The lock is held before the row is visible to anyone else.
                    self._lock_fd = self._acquire_lock(lock_path)
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

    @staticmethod
    def _acquire_lock(lock_path: pathlib.Path) -> int:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create run lock file {lock_path}: {error_reason(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock run lock file {lock_path}: {error_reason(exc)}") from exc
        _HELD_LOCK_FDS.add(fd)
        return fd

    def _release_lock(self) -> None:
        if self._lock_fd is None:
            return
        if self._lock_path is not None:
            remove_quietly(self._lock_path)          # unlink while still holding it
        _HELD_LOCK_FDS.discard(self._lock_fd)
        os.close(self._lock_fd)
        self._lock_fd = None
        self._lock_path = None

    def submit_records(self, blob: bytes) -> None:
        """Queue one buffer of packed request records.  Never blocks."""
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
        with self._records_lock:
            if not self._spilling and len(self._records) < self._records_max:
                self._records.append(blob)
                return
            if self._spool_write - self._spool_read + size + 4 <= self._spool_limit:
                try:
                    self._spool_append(blob)
                except OSError as exc:
                    self.last_error = f"spool: {error_reason(exc)}"
                else:
                    self._spilling = True       # until the spool is empty: keeps rows in order
                    self.spilled_records += size // RECORD_SIZE
                    return
        self._count_dropped(size // RECORD_SIZE)

    def _spool_append(self, blob: bytes) -> None:
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(dir=self.path.parent,
                                                 prefix=f".{self.path.name}.spool-")
        fd = self._spool.fileno()
        os.pwrite(fd, _SPOOL_LENGTH.pack(len(blob)) + blob, self._spool_write)
        self._spool_write += _SPOOL_LENGTH.size + len(blob)

    def _take_records(self, budget: int) -> list[bytes]:
        """Oldest record buffers first (memory, then spool), up to about `budget` bytes."""
        taken, size = [], 0
        with self._records_lock:
            while size < budget:
                if self._records:
                    blob = self._records.popleft()
                elif self._spool_read < self._spool_write:
                    fd = cast("IO[bytes]", self._spool).fileno()      # (rows in it: it exists)
                    (length,) = _SPOOL_LENGTH.unpack(
                        os.pread(fd, _SPOOL_LENGTH.size, self._spool_read))
                    blob = os.pread(fd, length, self._spool_read + _SPOOL_LENGTH.size)
                    self._spool_read += _SPOOL_LENGTH.size + length
                else:
                    if self._spilling:          # drained: back to memory, spool file reused
                        self._spool_read = self._spool_write = 0
                        os.ftruncate(cast("IO[bytes]", self._spool).fileno(), 0)
                        self._spilling = False
                    break
                taken.append(blob)
                size += len(blob)
        return taken

    def submit_window(self, window: Window) -> None:
        """Queue one closed per-second window.  Never blocks."""
        if not self._accept_windows:
            return
        if self._thread is None or self._finished:
            if self._run_id is None:
                raise RuntimeError("RunWriter.submit_window() before begin()")
            with self._drop_lock:
                self.dropped_windows += 1
            return
        try:
            self._queue.put_nowait((_WINDOW, window))
        except queue.Full:
            with self._drop_lock:
                self.dropped_windows += 1

    def _count_dropped(self, records: int) -> None:
        with self._drop_lock:
            self.dropped_batches += 1
            self._queue_dropped_records += records

    def finish(self, result: dict[str, Any], status: str = "completed") -> None:
        """Drain the queue, write the summary and status, checkpoint, release the run lock."""
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
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._finished = True
        conn = cast(apsw.Connection, self._conn)      # (set by begin(), until now)
        unknown: list[str] = []
        try:
            columns = set(table_columns(conn, "test_runs")) - {"id", "uuid", "status"}
            unknown = sorted(set(result) - columns - {"id", "uuid", "status"})
            values = {k: _encode_value(v) for k, v in result.items() if k in columns}
            values["completed_at"] = values.get("completed_at") or utc_now_iso()
            values["dropped_records"] = int(values.get("dropped_records") or 0) + self.dropped_records
            sets = ", ".join(f"{n} = :{n}" for n in values)
            values["_id"] = self._run_id
            values["_status"] = status
            with transaction(conn):
                conn.execute(f"UPDATE test_runs SET {sets}, status = :_status WHERE id = :_id", values)
            with contextlib.suppress(apsw.BusyError, apsw.LockedError):
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
        except apsw.ConstraintError as exc:
            raise ValueError(f"invalid test_runs values: {error_reason(exc)}") from exc
        except apsw.Error as exc:
            raise store_error(self.path, exc, "write") from exc
        finally:
            self._release_lock()
            conn.close()
            self._conn = None
        if unknown:
            raise ValueError(f"unknown test_runs column(s) ignored: {', '.join(unknown)}")

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
            # Below the load generator: while it is busy the rows wait (memory, then spool)
            # and are written when it is idle or done, instead of taking its CPU.
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
        finally:
            conn.close()

    def _loop(self, conn: apsw.Connection) -> None:
        stopping = False
        idle = False
        while True:
            windows: list[tuple[int, Any]] = []
            try:                                      # windows first: the live view reads them
                item = self._queue.get(timeout=IDLE_POLL_S) if idle else self._queue.get_nowait()
                while True:
                    if item is _STOP:
                        stopping = True
                    else:
                        windows.append(item)
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            if windows:
                self._write(conn, windows)
                self._after_write(conn)
            blobs = self._take_records(self._txn_bytes)
            if blobs:
                self._write(conn, [(_RECORDS, blob) for blob in blobs])
                self._after_write(conn)
            elif stopping:
                break
            idle = not blobs and not windows

    def _write(self, conn: apsw.Connection, items: list[tuple[int, Any]]) -> None:
        for _attempt in range(4):
            seq = self._seq
            rows = windows = duplicates = bad = 0
            try:
                with transaction(conn):
                    for kind, payload in items:
                        if kind == _RECORDS:
                            n = self._insert_records(conn, payload, seq)
                            seq += n
                            rows += n
                            continue
                        outcome = self._insert_window(conn, payload)
                        if outcome == "ok":
                            windows += 1
                        elif outcome == "duplicate":
                            duplicates += 1
                        else:
                            bad += 1
            except apsw.BusyError as exc:             # another writer held on for > busy_timeout
                self.last_error = error_reason(exc)
                continue
            except Exception as exc:                  # never let the writer thread die
                self.last_error = " ".join(f"{type(exc).__name__}: {exc}".split())
                break
            self._seq = seq
            self.rows_written += rows
            self.windows_written += windows
            self.duplicate_windows += duplicates
            if bad:
                with self._drop_lock:
                    self.dropped_windows += bad
            return
        # The transaction was rolled back: everything in it is lost, and counted.
        self.write_errors += 1
        lost_records = sum(len(p) // RECORD_SIZE for k, p in items if k == _RECORDS)
        with self._drop_lock:
            self._write_dropped_records += lost_records
            self.dropped_batches += sum(1 for k, _ in items if k == _RECORDS)
            self.dropped_windows += sum(1 for k, _ in items if k == _WINDOW)

    def _insert_records(self, conn: apsw.Connection, blob: bytes, seq: int) -> int:
        n = len(blob) // RECORD_SIZE
        if n == 0:
            return 0
        before = conn.execute("SELECT max(id) FROM request_records").get or 0
        # Rows go in straight from the buffer: (timestamp, latency, wait_us, bytes, code).
        conn.executemany(_INSERT_RECORDS, _ROW.iter_unpack(blob))
        last = conn.last_insert_rowid()
        if last - before != n:                        # ids are max+1 under our write lock
            raise StoreError(f"request ids not contiguous ({before}+{n} != {last})")
        conn.execute(_INSERT_BATCH, (self._run_id, seq, before + 1, last))
        return n

    def _insert_window(self, conn: apsw.Connection, window: Window) -> str:
        """'ok', 'duplicate' (that worker's second is already stored: the first one is kept),
        or 'bad' (a malformed window: dropped and counted, the rest of the batch still goes in)."""
        try:
            counters: Mapping[str, Any] = window.get("counters") or {}
            kinds = [int(v) for v in counters.get("errors") or ()]
            error_total = sum(kinds[1:])
            error_kinds = {ERROR_KINDS[i] if i < len(ERROR_KINDS) else str(i): v
                           for i, v in enumerate(kinds) if i and v}
            status = {str(code): int(count) for code, count in
                      sorted((counters.get("status") or {}).items(), key=lambda kv: int(kv[0])) if count}
            params = (
                self._run_id, int(window.get("worker", 0)), int(window["second"]),
                int(counters.get("responses", 0)) + error_total, int(counters.get("successes", 0)),
                error_total, _json_text(error_kinds) if error_kinds else None,
                int(counters.get("bytes", 0)), _json_text(status) if status else None,
                _encode_value(window.get("latency")), _encode_value(window.get("service")),
                window.get("loop_lag_us"), counters.get("max_wait_us"), window.get("in_flight"),
                window.get("cpu_us"),
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            return "bad"
        conn.execute(_INSERT_WINDOW, params)
        return "ok" if conn.changes() > 0 else "duplicate"

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
                self.last_error = error_reason(exc)
