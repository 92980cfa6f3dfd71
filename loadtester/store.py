"""The SQLite store, through APSW: open (pragmas, checks, migrations), the run writer, backup.

Every connection comes from `open_database()` (or, for the writer's own thread, the same
`_connect()` + `_configure()` it uses): WAL, synchronous=NORMAL, a 5 s busy timeout,
foreign_keys=ON, journal_size_limit.  Schema changes are the numbered files in
loadtester/schema/ (the repository's top-level schema/ links there), applied in order, one
transaction each, with the version kept in PRAGMA user_version and the file marked as ours
with PRAGMA application_id.

`RunWriter` keeps the database off the hot path: the engine hands it whole buffers of packed
request records and closed per-second windows, `submit_*` never blocks (a full queue drops the
batch and counts it), and a daemon thread with its own connection writes one transaction per
batch.  Automatic checkpoints are off while a run writes; the writer checkpoints PASSIVE when
the -wal passes half its bound and TRUNCATE at the end.  A run holds an flock on
`<db>.run-<uuid>.lock` for its whole life, so the next `open_database()` can tell a dead
writer's 'running' row from a live one and marks only the dead ones 'interrupted'.

Requests are stored as small as SQLite allows (see schema/001_init.sql): `request_records`
(one row per request, keyed by a database-wide integer id) plus `request_batches` (which run
and per-run sequence number each batch of ids belongs to); the VIEW `request_metrics` gives the
PipeOps shape, one row per request with test_run_id, seq, timestamp, latency, success, ....
"""
from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import fcntl
import glob
import importlib.resources
import json
import os
import sys
import pathlib
import queue
import re
import shutil
import struct
import tempfile
import threading
import time
import urllib.parse
import uuid as _uuid
from typing import Any, Iterator

import apsw

from loadtester import _engine

DEFAULT_DB_PATH = "data/loadtest.db"
APPLICATION_ID = 0x4C545354          # 'LTST'
SCHEMA_VERSION = len(list((pathlib.Path(__file__).parent / "schema").glob("[0-9][0-9][0-9]_*.sql")))
# = number of the latest file in loadtester/schema/ (they are numbered 001, 002, ... without gaps)
BUSY_TIMEOUT_MS = 5000
JOURNAL_SIZE_LIMIT = 64 << 20
BACKUP_STEP_PAGES = 1024

# The engine's request record: start_us (since the run's start), latency_us (corrected),
# wait_us, bytes, status, error, worker; little-endian, 24 bytes.
RECORD_FORMAT = _engine.RECORD_FORMAT     # the engine's RequestRecord: one definition
RECORD_SIZE = struct.calcsize(RECORD_FORMAT)
# The same 24 bytes read with status | error << 16 | worker << 24 as one uint32: the stored `code`.
_ROW = struct.Struct("<QIIII")
assert _ROW.size == RECORD_SIZE == _engine.RECORD_SIZE == 24

ERROR_KINDS = ("none", "connect", "timeout", "read", "write", "parse")
RUN_STATUSES = ("running", "completed", "stopped", "failed", "interrupted")
STORE_MODES = ("requests", "windows", "none")
HISTOGRAM_COLUMNS = ("latency_hist", "service_hist")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_MIGRATION_RE = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.sql$")


class StoreError(Exception):
    """A user-facing problem with the database; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------- small helpers

def iso_utc(value: _dt.datetime) -> str:
    """An aware datetime as ISO-8601 UTC with milliseconds: 2025-11-25T01:40:00.123Z."""
    return value.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso_utc(text) -> _dt.datetime | None:
    """A stored timestamp back as an aware datetime (no zone means UTC); None when unreadable."""
    if not text:
        return None
    try:
        value = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)


def utc_now_iso() -> str:
    """Now as ISO-8601 UTC with milliseconds: 2025-11-25T01:40:00.123Z."""
    return iso_utc(_dt.datetime.now(_dt.timezone.utc))


def resolve_db_path(cli_value: str | None) -> pathlib.Path:
    """--db beats the DB_PATH environment variable beats DEFAULT_DB_PATH (relative to cwd)."""
    for value in (cli_value, os.environ.get("DB_PATH")):
        if value:
            return pathlib.Path(os.path.expanduser(str(value)))
    return pathlib.Path(DEFAULT_DB_PATH)


def run_lock_path(db_path, run_uuid: str) -> pathlib.Path:
    """The lock file a live run holds (flock, exclusive) next to its database."""
    db = pathlib.Path(os.path.realpath(db_path))
    return db.with_name(f"{db.name}.run-{run_uuid}.lock")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def _store_error(path, exc: BaseException, doing: str = "open") -> StoreError:
    """Translate an APSW / OS error into a one-line StoreError naming the file."""
    reason = _reason(exc)
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return StoreError(f"database {path} is corrupt ({reason}); "
                          "run 'loadtester db check' or restore a backup")
    if isinstance(exc, apsw.FullError):
        return StoreError(f"cannot {doing} database {path}: disk full")
    if isinstance(exc, (apsw.ReadOnlyError, apsw.PermissionsError)):
        return StoreError(f"cannot {doing} database {path}: file or directory is read-only ({reason})")
    if isinstance(exc, apsw.BusyError):
        return StoreError(f"cannot {doing} database {path}: locked by another process "
                          f"for more than {BUSY_TIMEOUT_MS // 1000} s")
    if isinstance(exc, apsw.CantOpenError):
        return StoreError(f"cannot {doing} database {path}: {reason}")
    if isinstance(exc, OSError):
        where = exc.filename if getattr(exc, "filename", None) else path
        return StoreError(f"cannot {doing} database {path}: {where}: {reason}")
    return StoreError(f"cannot {doing} database {path}: {reason}")


@contextlib.contextmanager
def _translated(path, doing: str = "read"):
    try:
        yield
    except StoreError:
        raise
    except (apsw.Error, OSError) as exc:
        raise _store_error(path, exc, doing) from exc


@contextlib.contextmanager
def _transaction(conn: apsw.Connection):
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), issued through execute().

    Not `with conn:`: in APSW 3.54 Connection.__enter__ keeps the GIL while SQLite's busy
    handler waits for the write lock, so a writer thread waiting on another process froze every
    thread of ours for up to the busy timeout; execute() releases the GIL while it waits."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if not conn.get_autocommit():
            conn.execute("ROLLBACK")
        raise


def _conn_path(conn: apsw.Connection) -> str:
    try:
        return conn.filename or "(memory)"
    except apsw.Error:
        return "(closed database)"


def _file_size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _fsync_dir(directory: pathlib.Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(*paths) -> None:
    for p in paths:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def _sidecars(path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    return (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
            path.with_name(path.name + "-journal"))


# --------------------------------------------------------------------------- migrations

def _migrations() -> list[tuple[int, str, str]]:
    """[(version, file name, sql)] from loadtester/schema/, numbered 001, 002, ... without gaps."""
    found = []
    try:
        folder = importlib.resources.files("loadtester") / "schema"
        for entry in folder.iterdir():
            match = _MIGRATION_RE.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    except OSError as exc:
        raise StoreError(f"loadtester is installed without its schema files ({_reason(exc)})") from exc
    found.sort()
    if [v for v, _, _ in found] != list(range(1, SCHEMA_VERSION + 1)):
        raise StoreError("loadtester is installed with missing or extra schema files "
                         f"(found {[n for _, n, _ in found]}, expected 001..{SCHEMA_VERSION:03d})")
    return found


# --------------------------------------------------------------------------- opening

def _read_header(path: pathlib.Path) -> bytes | None:
    """The first 100 bytes, b'' for an empty file, None when there is no file."""
    try:
        with open(path, "rb") as f:
            return f.read(100)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise StoreError(f"{path} is a directory, not a database file") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {_reason(exc)}") from exc


def _check_identity(path, app_id: int, version: int, has_tables: bool) -> None:
    if app_id not in (0, APPLICATION_ID):
        raise StoreError(f"{path} is not a loadtester database "
                         f"(it belongs to another application: application_id 0x{app_id & 0xFFFFFFFF:08X})")
    if app_id == 0 and has_tables:
        raise StoreError(f"{path} is not a loadtester database (it has tables but no loadtester "
                         "application_id); use another --db path")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer loadtester (schema {version} > "
                         f"{SCHEMA_VERSION}); upgrade loadtester")


def _check_header(path, header: bytes) -> None:
    """Refuse foreign files from their header alone, before SQLite touches them."""
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path} is not a loadtester database (not an SQLite file)")
    version, = struct.unpack_from(">i", header, 60)
    app_id, = struct.unpack_from(">I", header, 68)
    _check_identity(path, app_id, version, has_tables=False)


def _connect(path, *, readonly: bool) -> apsw.Connection:
    path = pathlib.Path(path)
    name = str(path)
    if readonly:
        flags = apsw.SQLITE_OPEN_READONLY
        wal = path.with_name(path.name + "-wal")
        if not os.access(path.parent, os.W_OK | os.X_OK) and not wal.exists():
            # A WAL database in a directory we cannot write: SQLite cannot create the -shm, and
            # nobody can be writing it (a writer would need a -wal here), so it is immutable.
            name = "file:" + urllib.parse.quote(str(path.absolute())) + "?immutable=1"
            flags |= apsw.SQLITE_OPEN_URI
    else:
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    conn = apsw.Connection(name, flags=flags)
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    return conn


def _connect_reader(path) -> apsw.Connection:
    """A connection that will not write.  Opened read-write with query_only when the files
    allow it, so that closing it (the last connection) still tidies the -wal and -shm away."""
    path = pathlib.Path(path)
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
    conn = _connect(path, readonly=not writable)
    conn.pragma("query_only", "ON")
    return conn


def _configure(conn: apsw.Connection, *, readonly: bool, journal_size_limit: int = JOURNAL_SIZE_LIMIT) -> None:
    """The pragmas every connection gets."""
    conn.pragma("foreign_keys", "ON")
    if not readonly:
        conn.pragma("journal_mode", "WAL")
        conn.pragma("synchronous", "NORMAL")
        conn.pragma("journal_size_limit", int(journal_size_limit))
        # Callers using `with conn:` get BEGIN IMMEDIATE: no SQLITE_BUSY on upgrade mid-transaction.
        conn.transaction_mode = "IMMEDIATE"


def _inspect(conn: apsw.Connection, path) -> int:
    """Check identity and readability of the core tables; return user_version."""
    app_id = conn.pragma("application_id") & 0xFFFFFFFF
    version = conn.pragma("user_version")
    tables = conn.execute("SELECT count(*) FROM sqlite_schema").get
    _check_identity(path, app_id, version, has_tables=tables > 0 and app_id == 0)
    if app_id == APPLICATION_ID and version >= 1:
        # Walks the runs table (small: one row per run), so a damaged core shows up now.
        conn.execute("SELECT count(*), max(id) FROM test_runs NOT INDEXED").fetchall()
        conn.execute("SELECT count(*) FROM test_runs WHERE status = 'running'").fetchall()
    return version


def _migrate(conn: apsw.Connection, path) -> None:
    if conn.pragma("user_version") >= SCHEMA_VERSION and conn.pragma("application_id") == APPLICATION_ID:
        return
    for version, name, sql in _migrations():
        with _transaction(conn):          # BEGIN IMMEDIATE: one migrator at a time
            current = conn.pragma("user_version")
            if current >= version:
                continue
            if current == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_schema").get
                _check_identity(path, conn.pragma("application_id") & 0xFFFFFFFF, 0, tables > 0)
            try:
                conn.execute(sql)
            except apsw.SQLError as exc:
                raise StoreError(f"schema migration {name} failed on {path}: {_reason(exc)}") from exc
            conn.pragma("user_version", version)
            conn.pragma("application_id", APPLICATION_ID)


def _try_lock(lock_path: pathlib.Path) -> tuple[bool, int | None]:
    """(writer gone?, fd holding its lock or None).  A missing lock file means gone."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True, None
    except OSError:
        return False, None                            # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False, None
    return True, fd


def _reap(conn: apsw.Connection, path) -> list[int]:
    """Mark runs left 'running' by a writer that is gone as 'interrupted'; return their ids."""
    reaped = []
    running = conn.execute("SELECT id, uuid FROM test_runs WHERE status = 'running'").fetchall()
    for run_id, run_uuid in running:
        lock_path = run_lock_path(path, run_uuid)
        gone, fd = _try_lock(lock_path)
        if not gone:
            continue
        try:
            with _transaction(conn):
                conn.execute(_REAP_SQL, {"now": utc_now_iso(), "id": run_id})
                if conn.changes():
                    reaped.append(run_id)
            if fd is not None:
                _remove_quietly(lock_path)
        finally:
            if fd is not None:
                os.close(fd)
    return reaped


_REAP_SQL = """
UPDATE test_runs SET
    status = 'interrupted',
    completed_at = :now,
    stop_reason = coalesce(stop_reason, 'the writing process ended without finishing the run'),
    total_requests = coalesce(total_requests,
        (SELECT sum(requests) FROM metric_windows WHERE test_run_id = :id),
        (SELECT sum(last_id - first_id + 1) FROM request_batches WHERE test_run_id = :id)),
    success_count = coalesce(success_count,
        (SELECT sum(successes) FROM metric_windows WHERE test_run_id = :id)),
    error_count = coalesce(error_count,
        (SELECT sum(requests - successes) FROM metric_windows WHERE test_run_id = :id)),
    bytes = coalesce(bytes, (SELECT sum(bytes) FROM metric_windows WHERE test_run_id = :id))
WHERE id = :id AND status = 'running'
"""


def _prepare_parent(path: pathlib.Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StoreError(f"cannot create database {path}: {parent} exists and is not a directory") from None
    except NotADirectoryError:
        raise StoreError(f"cannot create database {path}: a part of {parent} is not a directory") from None
    except OSError as exc:
        raise StoreError(f"cannot create directory {parent} for database {path}: {_reason(exc)}") from exc


def open_database(path, *, readonly: bool = False, create: bool = True) -> apsw.Connection:
    """Open (creating and migrating if needed) a loadtester database, with our pragmas.

    Refuses, with StoreError and without writing to it: a file that is not SQLite, an SQLite
    file of another application, one written by a newer loadtester, one whose core is corrupt.
    readonly=True never writes: no migrations, no marking of interrupted runs.
    """
    path = pathlib.Path(path)
    header = _read_header(path)
    if header is None:
        if readonly or not create:
            raise StoreError(f"no database at {path}")
        _prepare_parent(path)
    elif header:
        _check_header(path, header)
    if not readonly and not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write database {path}: directory {path.parent} is not writable")

    if header:
        # Look before writing anything: a read-only connection cannot change the file.
        probe = None
        wal, shm, _ = _sidecars(path)
        made_by_probe = [p for p in (wal, shm) if not p.exists()]
        try:
            probe = _connect(path, readonly=True)
            _inspect(probe, path)
        except StoreError:
            raise
        except (apsw.CorruptError, apsw.NotADBError) as exc:
            raise _store_error(path, exc) from exc
        except apsw.Error:
            pass            # e.g. a hot journal only a writer may roll back: inspect below instead
        finally:
            if probe is not None:
                probe.close()
            if sys.exc_info()[0] is not None:
                # Refused: leave the directory as we found it (an empty -wal and the -shm
                # that only this probe created).
                for sidecar in made_by_probe:
                    if sidecar.exists() and (sidecar == shm or sidecar.stat().st_size == 0):
                        _remove_quietly(sidecar)

    conn = None
    try:
        conn = _connect_reader(path) if readonly else _connect(path, readonly=False)
        version = _inspect(conn, path)
        if readonly and version == 0:
            raise StoreError(f"{path} holds no loadtester data yet")
        _configure(conn, readonly=readonly)
        if not readonly:
            _migrate(conn, path)
            _reap(conn, path)
        return conn
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, (apsw.Error, OSError)):
            raise _store_error(path, exc, "open") from exc
        raise


# --------------------------------------------------------------------------- the writer

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

_INSERT_RECORDS = "INSERT INTO request_records (timestamp, latency, wait_us, bytes, code) VALUES (?, ?, ?, ?, ?)"
_INSERT_BATCH = "INSERT INTO request_batches (test_run_id, first_seq, first_id, last_id) VALUES (?, ?, ?, ?)"
_INSERT_WINDOW = """
INSERT INTO metric_windows (test_run_id, worker, second, requests, successes, errors, error_kinds,
                            bytes, status_codes, latency_hist, service_hist, loop_lag_us,
                            max_wait_us, in_flight, cpu_us)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""


def _json_text(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _encode_value(value):
    if isinstance(value, (dict, list, tuple)):
        return _json_text(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return value


def _table_columns(conn: apsw.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


class RunWriter:
    """Writes one run: its test_runs row, request rows and windows, off the hot path.

        writer = RunWriter(db_path, store_mode="requests")
        run_id, run_uuid = writer.begin({"url": ..., "mode": "closed", ...})
        writer.submit_records(blob)      # never blocks; drops (counted) when the queue is full
        writer.submit_window(window)     # never blocks
        writer.finish(result, status="completed")
    """

    def __init__(self, path, *, store_mode: str = "requests", queue_batches: int = 16,
                 wal_bound_bytes: int = 64 << 20, spool_limit_bytes: int = SPOOL_LIMIT_BYTES,
                 writer_nice: int = WRITER_NICE):
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
        self._queue: queue.Queue = queue.Queue(maxsize=WINDOW_QUEUE_MAX)
        self._records: collections.deque = collections.deque()
        self._records_max = max(1, int(queue_batches))
        self._records_lock = threading.Lock()
        self._spool_limit = max(0, int(spool_limit_bytes))
        self._spool = None
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
    def begin(self, run: dict) -> tuple[int, str]:
        """Insert the test_runs row (status 'running'), take the run lock, start the writer."""
        if self._run_id is not None:
            raise RuntimeError("RunWriter.begin() was already called")
        conn = open_database(self.path)
        try:
            columns = set(_table_columns(conn, "test_runs")) - {"id"}
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
                with _transaction(conn):
                    conn.execute(sql, values)
                    run_id = conn.last_insert_rowid()
                    # The lock is held before the row is visible to anyone else.
                    self._lock_fd = self._acquire_lock(lock_path)
                    self._lock_path = lock_path
            except apsw.ConstraintError as exc:
                self._release_lock()
                raise ValueError(f"invalid test_runs values: {_reason(exc)}") from exc
            except apsw.Error as exc:
                self._release_lock()
                raise _store_error(self.path, exc, "write") from exc
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
                    self.finish({"stop_reason": f"store writer failed: {_reason(error)}"}, status="failed")
                if isinstance(error, StoreError):
                    raise error
                raise _store_error(self.path, error, "write")
        return run_id, values["uuid"]

    @staticmethod
    def _acquire_lock(lock_path: pathlib.Path) -> int:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create run lock file {lock_path}: {_reason(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock run lock file {lock_path}: {_reason(exc)}") from exc
        _HELD_LOCK_FDS.add(fd)
        return fd

    def _release_lock(self) -> None:
        if self._lock_fd is None:
            return
        if self._lock_path is not None:
            _remove_quietly(self._lock_path)          # unlink while still holding it
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
                    self.last_error = f"spool: {_reason(exc)}"
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
                    fd = self._spool.fileno()
                    (length,) = _SPOOL_LENGTH.unpack(
                        os.pread(fd, _SPOOL_LENGTH.size, self._spool_read))
                    blob = os.pread(fd, length, self._spool_read + _SPOOL_LENGTH.size)
                    self._spool_read += _SPOOL_LENGTH.size + length
                else:
                    if self._spilling:          # drained: back to memory, spool file reused
                        self._spool_read = self._spool_write = 0
                        os.ftruncate(self._spool.fileno(), 0)
                        self._spilling = False
                    break
                taken.append(blob)
                size += len(blob)
        return taken

    def submit_window(self, window: dict) -> None:
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

    def finish(self, result: dict, status: str = "completed") -> None:
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
        conn = self._conn
        unknown: list[str] = []
        try:
            columns = set(_table_columns(conn, "test_runs")) - {"id", "uuid", "status"}
            unknown = sorted(set(result) - columns - {"id", "uuid", "status"})
            values = {k: _encode_value(v) for k, v in result.items() if k in columns}
            values["completed_at"] = values.get("completed_at") or utc_now_iso()
            values["dropped_records"] = int(values.get("dropped_records") or 0) + self.dropped_records
            sets = ", ".join(f"{n} = :{n}" for n in values)
            values["_id"] = self._run_id
            values["_status"] = status
            with _transaction(conn):
                conn.execute(f"UPDATE test_runs SET {sets}, status = :_status WHERE id = :_id", values)
            with contextlib.suppress(apsw.BusyError, apsw.LockedError):
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
        except apsw.ConstraintError as exc:
            raise ValueError(f"invalid test_runs values: {_reason(exc)}") from exc
        except apsw.Error as exc:
            raise _store_error(self.path, exc, "write") from exc
        finally:
            self._release_lock()
            conn.close()
            self._conn = None
        if unknown:
            raise ValueError(f"unknown test_runs column(s) ignored: {', '.join(unknown)}")

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
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
            conn = _connect(self.path, readonly=False)
            _configure(conn, readonly=False,
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
            windows = []
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

    def _write(self, conn: apsw.Connection, items: list) -> None:
        for attempt in range(4):
            seq = self._seq
            rows = windows = duplicates = bad = 0
            try:
                with _transaction(conn):
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
                self.last_error = _reason(exc)
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

    def _insert_window(self, conn: apsw.Connection, window: dict) -> str:
        """'ok', 'duplicate' (that worker's second is already stored: the first one is kept),
        or 'bad' (a malformed window: dropped and counted, the rest of the batch still goes in)."""
        try:
            counters = window.get("counters") or {}
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
                self.last_error = _reason(exc)


# --------------------------------------------------------------------------- reading

def _dict_rows(cursor) -> Iterator[dict]:
    names = None
    for row in cursor:
        if names is None:
            names = [d[0] for d in cursor.get_description()]
        yield dict(zip(names, row))


def find_run(conn: apsw.Connection, ref) -> dict | None:
    """A run by integer id, 'last' (most recently started), or a uuid prefix of >= 4 characters.

    The test_runs row as stored: JSON columns (headers, config, ...) as JSON text, blobs as bytes."""
    ref = str(ref).strip()
    with _translated(_conn_path(conn)):
        if ref.lower() == "last":
            rows = list(_dict_rows(conn.execute(
                "SELECT * FROM test_runs ORDER BY started_at DESC, id DESC LIMIT 1")))
            return rows[0] if rows else None
        if ref.isdigit():
            rows = list(_dict_rows(conn.execute("SELECT * FROM test_runs WHERE id = ?", (int(ref),))))
            if rows:
                return rows[0]
        if len(ref) < 4:
            if ref.isdigit():
                return None
            raise StoreError(f"run reference {ref!r} is too short: give an id, 'last', "
                             "or at least 4 characters of a uuid")
        prefix = ref.lower()
        rows = list(_dict_rows(conn.execute(
            "SELECT * FROM test_runs WHERE uuid >= ?1 AND uuid < ?1 || char(1114111) "
            "ORDER BY id LIMIT 2", (prefix,))))
    if len(rows) > 1:
        raise StoreError(f"run reference {ref!r} is ambiguous: it matches more than one run uuid")
    return rows[0] if rows else None


def list_runs(conn: apsw.Connection, limit: int = 50) -> list[dict]:
    """The newest runs first: test_runs rows as stored, every column but the histogram blobs."""
    with _translated(_conn_path(conn)):
        columns = [c for c in _table_columns(conn, "test_runs") if c not in HISTOGRAM_COLUMNS]
        cursor = conn.execute(f"SELECT {', '.join(columns)} FROM test_runs "
                              "ORDER BY started_at DESC, id DESC LIMIT ?", (int(limit),))
        return list(_dict_rows(cursor))


def run_windows(conn: apsw.Connection, run_id: int) -> list[dict]:
    """A run's windows by second then worker: the metric_windows columns as stored (JSON as
    text), plus `counters`, `latency` and `service` in the shape RunWriter.submit_window() takes
    (counters["status"] has int keys; counters["errors"] is indexed by error kind)."""
    out = []
    with _translated(_conn_path(conn)):
        cursor = conn.execute("SELECT * FROM metric_windows WHERE test_run_id = ? ORDER BY second, worker",
                              (int(run_id),))
        for row in _dict_rows(cursor):
            kinds = json.loads(row["error_kinds"]) if row["error_kinds"] else {}
            errors = [0] * len(ERROR_KINDS)
            for name, count in kinds.items():
                if name in ERROR_KINDS:
                    errors[ERROR_KINDS.index(name)] = count
            status = {int(k): v for k, v in json.loads(row["status_codes"]).items()} if row["status_codes"] else {}
            row["latency"] = row["latency_hist"]
            row["service"] = row["service_hist"]
            row["counters"] = {
                "responses": row["requests"] - row["errors"],
                "successes": row["successes"],
                "bytes": row["bytes"],
                "errors": errors,
                "status": status,
                "max_wait_us": row["max_wait_us"] or 0,
            }
            out.append(row)
    return out


# A run's request rows in seq order (one parameter: the run id); each caller picks its columns.
REQUEST_ROWS_FROM = (
    "FROM request_batches AS b JOIN request_records AS r ON r.id BETWEEN b.first_id AND b.last_id "
    "WHERE b.test_run_id = ? ORDER BY b.first_seq, r.id")


def iter_requests(conn: apsw.Connection, run_id: int) -> Iterator[dict]:
    """A run's request rows in seq order, as request_metrics shows them (latency etc. in µs)."""
    run_id = int(run_id)
    sql = ("SELECT b.first_seq + (r.id - b.first_id), r.timestamp, r.latency, r.wait_us, r.bytes, r.code "
           + REQUEST_ROWS_FROM)
    with _translated(_conn_path(conn)):
        for seq, timestamp, latency, wait_us, nbytes, code in conn.execute(sql, (run_id,)):
            status = code & 0xFFFF
            error = (code >> 16) & 0xFF
            yield {"test_run_id": run_id, "seq": seq, "timestamp": timestamp, "latency": latency,
                   "wait_us": wait_us, "success": int(error == 0 and 100 <= status < 400),
                   "status_code": status, "error": error, "bytes": nbytes, "worker": (code >> 24) & 0xFF}


# --------------------------------------------------------------------------- maintenance

def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _copy_database(src_conn: apsw.Connection, dest: pathlib.Path, progress=None) -> tuple[int, int]:
    """Copy src_conn's database into a new file `dest` with the online backup API, in steps of
    BACKUP_STEP_PAGES pages, all read from one snapshot: the source's read transaction is held
    for the whole copy, so a writer committing meanwhile (WAL: it is never blocked) neither
    restarts the copy nor makes it inconsistent.  Returns (pages, steps).
    progress(copied_pages, total_pages), if given, is called after each step."""
    for p in (dest, *_sidecars(dest)):
        _remove_quietly(p)
    dest_conn = apsw.Connection(str(dest))
    pages = steps = 0
    try:
        src_conn.execute("BEGIN DEFERRED")
        try:
            src_conn.execute("SELECT count(*) FROM sqlite_schema").get     # pins the snapshot
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
    for p in _sidecars(dest):                          # a WAL copy leaves none after close
        _remove_quietly(p)
    return pages, steps


def backup(src_path, dest_path, *, progress=None) -> dict:
    """Consistent online copy of the database (even while a run writes) to dest_path.

    Written to dest + '.tmp', then renamed over dest; the copy is one self-contained file.
    progress(copied_pages, total_pages) is called after each step of BACKUP_STEP_PAGES pages.
    Returns {"path", "bytes", "pages", "steps", "seconds"}."""
    src, dest = pathlib.Path(src_path), pathlib.Path(dest_path)
    if _same_file(src, dest):
        raise StoreError(f"backup destination {dest} is the database itself")
    if dest.is_dir():
        raise StoreError(f"backup destination {dest} is a directory; give a file name")
    if dest.exists():
        header = _read_header(dest)
        if header:
            try:
                _check_header(dest, header)
            except StoreError:
                raise StoreError(f"{dest} exists and is not a loadtester database; "
                                 "refusing to overwrite it") from None
    started = time.perf_counter()
    src_conn = open_database(src, readonly=True, create=False)
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        _prepare_parent(dest)
        with _translated(dest, "write backup"):
            pages, steps = _copy_database(src_conn, tmp, progress)
            for p in _sidecars(dest)[:2]:              # they would belong to the old dest file
                _remove_quietly(p)
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
    except BaseException:
        for p in (tmp, *_sidecars(tmp)):
            with contextlib.suppress(OSError):
                _remove_quietly(p)
        raise
    finally:
        src_conn.close()
    return {"path": str(dest), "bytes": _file_size(dest), "pages": pages, "steps": steps,
            "seconds": time.perf_counter() - started}


def _integrity_problems(conn: apsw.Connection, quick: bool = False) -> list[str]:
    problems = []
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
    real = pathlib.Path(os.path.realpath(db))
    held = []
    for lock_path in sorted(real.parent.glob(f"{glob.escape(real.name)}.run-*.lock")):
        gone, fd = _try_lock(lock_path)
        if fd is not None:
            os.close(fd)
        if not gone:
            held.append(lock_path)
    return held


def restore(src_path, db_path) -> pathlib.Path | None:
    """Replace the database with the backup src_path.

    The backup is checked first (ours, not newer, integrity ok); refused while a run is still
    writing.  The copy is made next to the database and renamed into place; the old database
    is kept as <db>.bak-<UTC timestamp> (returned; None when there was no old database)."""
    src, db = pathlib.Path(src_path), pathlib.Path(db_path)
    if not src.exists():
        raise StoreError(f"no backup at {src}")
    if db.exists() and _same_file(src, db):
        raise StoreError(f"{src} is the database itself; nothing to restore")
    src_conn = open_database(src, readonly=True, create=False)
    try:
        with _translated(src, "check backup"):
            problems = _integrity_problems(src_conn)
        if problems:
            raise StoreError(f"backup {src} failed its integrity check: {problems[0]}")
        held = _held_run_locks(db)
        if held:
            raise StoreError(f"a run is still writing to {db} ({held[0].name}); "
                             "wait for it to finish, then restore")
        _prepare_parent(db)
        tmp = db.with_name(db.name + ".restore-tmp")
        try:
            with _translated(db, "restore"):
                _copy_database(src_conn, tmp)
        except BaseException:
            _remove_quietly(tmp, *_sidecars(tmp))
            raise
    finally:
        src_conn.close()

    bak = None
    try:
        if db.exists():
            bak = _set_aside(db)
        os.replace(tmp, db)
        _fsync_dir(db.parent)
    except StoreError:
        _remove_quietly(tmp)
        raise
    except OSError as exc:
        _remove_quietly(tmp)
        raise StoreError(f"cannot restore into {db}: {_reason(exc)}") from exc
    # Bring an older backup's schema up to date and close out runs it caught mid-write.
    open_database(db).close()
    return bak


def _set_aside(db: pathlib.Path) -> pathlib.Path:
    """Keep the current database as <db>.bak-<stamp> (a hard link, so `db` itself stays in place
    until os.replace swaps the new file in) and clear its -wal/-shm, which belong to it."""
    wal, shm, _journal = _sidecars(db)
    folded = False
    try:                                              # fold the old -wal into the old file
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READWRITE)
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        try:
            conn.execute("SELECT count(*) FROM sqlite_schema").get
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
            folded = True
        finally:
            conn.close()                              # the last connection removes -wal and -shm
    except apsw.Error:
        pass
    if folded and wal.exists():
        raise StoreError(f"{db} is open in another process; stop it, then restore")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
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
            _remove_quietly(side)
    return bak


def check(path, quick: bool = False) -> list[str]:
    """integrity_check (quick_check when quick) + foreign_key_check + our own invariants;
    ["ok"] when all is well."""
    path = pathlib.Path(path)
    header = _read_header(path)
    if header is None:
        raise StoreError(f"no database at {path}")
    if header:
        _check_header(path, header)
    try:
        conn = _connect_reader(path)
    except apsw.Error as exc:
        raise _store_error(path, exc) from exc
    try:
        try:
            _inspect(conn, path)
        except (apsw.CorruptError, apsw.NotADBError) as exc:
            return [f"corrupt: {_reason(exc)}"]
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
            problems = [f"corrupt: {_reason(exc)}"]
        except apsw.Error as exc:
            raise _store_error(path, exc, "check") from exc
    finally:
        conn.close()
    return problems or ["ok"]


def stats(path) -> dict:
    """Sizes of the files, counts of runs and rows, and on-disk bytes per request row."""
    path = pathlib.Path(path)
    wal, shm, _ = _sidecars(path)
    sizes = {"db_bytes": _file_size(path), "wal_bytes": _file_size(wal), "shm_bytes": _file_size(shm)}
    conn = open_database(path, readonly=True, create=False)      # (it may add a -shm of its own)
    try:
        with _translated(path):
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


def prune(path, older_than_s: float, vacuum: bool = False) -> dict:
    """Delete finished runs started more than older_than_s seconds ago, with their rows.

    Request rows go in transactions of a few batches each, checkpointing between them, so
    the -wal stays small however big the runs are; the run row goes last."""
    if older_than_s is None or older_than_s < 0:
        raise StoreError("--older-than must be a positive duration")
    path = pathlib.Path(path)
    conn = open_database(path, create=False)
    before = _file_size(path) + _file_size(_sidecars(path)[0])
    cutoff = (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=float(older_than_s)))
    cutoff_iso = iso_utc(cutoff)
    runs = rows = windows = 0
    try:
        with _translated(path, "prune"):
            victims = conn.execute(
                "SELECT id, (SELECT count(*) FROM metric_windows WHERE test_run_id = t.id) "
                "FROM test_runs AS t WHERE status != 'running' "
                "AND julianday(started_at) < julianday(?) ORDER BY id", (cutoff_iso,)).fetchall()
            for run_id, n_windows in victims:
                while True:
                    with _transaction(conn):
                        batch = conn.execute(
                            "SELECT first_seq, last_id - first_id + 1 FROM request_batches "
                            "WHERE test_run_id = ? ORDER BY first_seq LIMIT ?",
                            (run_id, _PRUNE_BATCHES_PER_TXN)).fetchall()
                        if not batch:
                            break
                        conn.executemany("DELETE FROM request_batches WHERE test_run_id = ? AND first_seq = ?",
                                         ((run_id, first_seq) for first_seq, _ in batch))
                        rows += sum(n for _, n in batch)
                    with contextlib.suppress(apsw.BusyError, apsw.LockedError):
                        conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                with _transaction(conn):
                    conn.execute("DELETE FROM test_runs WHERE id = ?", (run_id,))
                    runs += conn.changes()
                windows += n_windows
            if vacuum:
                conn.execute("VACUUM")
            with contextlib.suppress(apsw.BusyError, apsw.LockedError):
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
    finally:
        conn.close()
    after = _file_size(path) + _file_size(_sidecars(path)[0])
    return {"runs_deleted": runs, "rows_deleted": rows, "windows_deleted": windows,
            "vacuumed": bool(vacuum), "bytes_before": before, "bytes_after": after}
