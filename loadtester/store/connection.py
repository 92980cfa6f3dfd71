"""Connections to the SQLite file through APSW: the pragmas every connection gets, the
one-line StoreError every failure becomes, and BEGIN IMMEDIATE transactions."""
from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import time
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import apsw

if TYPE_CHECKING:
    from _typeshed import StrPath

# = number of the latest file in loadtester/schema/ (they are numbered 001, 002, ... without gaps)
BUSY_TIMEOUT_MS = 5000
JOURNAL_SIZE_LIMIT = 64 << 20


class StoreError(Exception):
    """A user-facing problem with the database; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# Less free space than this beside the database reads as a full disk: SQLite grows the -shm
# by 32 KiB at a time, and a failed -shm or -wal extension is reported as a bare I/O error.
FULL_DISK_BELOW_BYTES = 64 << 10


def error_reason(exc: BaseException, path: StrPath | None = None) -> str:
    """The cause, in a few words.  "disk full" for ENOSPC and SQLite's FULL, and for an
    SQLite I/O error (SQLite does not say which) when the filesystem of `path` has no room."""
    if isinstance(exc, apsw.FullError) or getattr(exc, "errno", None) == errno.ENOSPC:
        return "disk full"
    if isinstance(exc, apsw.IOError) and path is not None and no_room_beside(path):
        return "disk full"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def no_room_beside(path: StrPath) -> bool:
    try:
        st = os.statvfs(pathlib.Path(path).parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_DISK_BELOW_BYTES


def store_error(path: StrPath, exc: BaseException, doing: str = "open") -> StoreError:
    """Translate an APSW / OS error into a one-line StoreError naming the file."""
    reason = error_reason(exc, path)
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return StoreError(f"database {path} is corrupt ({reason}); "
                          "run 'loadtester db check' or restore a backup")
    if reason == "disk full":
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
def translated(path: StrPath, doing: str = "read") -> Iterator[None]:
    try:
        yield
    except StoreError:
        raise
    except (apsw.Error, OSError) as exc:
        raise store_error(path, exc, doing) from exc


@contextlib.contextmanager
def transaction(conn: apsw.Connection) -> Iterator[apsw.Connection]:
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


def conn_path(conn: apsw.Connection) -> str:
    try:
        return conn.filename or "(memory)"
    except apsw.Error:
        return "(closed database)"


def file_size(path: StrPath) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def fsync_dir(directory: pathlib.Path) -> None:
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


def remove_quietly(*paths: StrPath) -> None:
    for p in paths:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def sidecars(path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    return (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
            path.with_name(path.name + "-journal"))


def missing_sidecars(path: pathlib.Path) -> list[pathlib.Path]:
    """The -wal and -shm that do not exist yet: an open that fails may leave them."""
    wal, shm, _ = sidecars(path)
    return [p for p in (wal, shm) if not p.exists()]


# A -shm shorter than this was never mapped: no WAL connection uses it, nor its -wal.
SHM_FIRST_REGION_BYTES = 32768


def remove_unused_sidecars(path: pathlib.Path, made: list[pathlib.Path], *,
                           mapped_shm_too: bool = False) -> None:
    """After a failed open, remove the sidecars it made that nobody uses, so the directory is
    as found: the -shm and an empty -wal when the -shm was never mapped (another process
    that opened the file meanwhile would have mapped it), or with mapped_shm_too (a
    read-only probe of ours mapped it) whatever the -shm's size."""
    wal, shm, _ = sidecars(path)
    if not (mapped_shm_too or file_size(shm) < SHM_FIRST_REGION_BYTES):
        return
    for p in made:
        with contextlib.suppress(OSError):
            if p == shm or p.stat().st_size == 0:
                os.remove(p)


def connect(path: StrPath, *, readonly: bool) -> apsw.Connection:
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


def connect_reader(path: StrPath) -> apsw.Connection:
    """A connection that will not write.  Opened read-write with query_only when the files
    allow it, so that closing it (the last connection) still tidies an empty -wal and the
    -shm away; a -wal that holds commits is left for a writer to checkpoint (no checkpoint
    on close: reading never writes to the database file)."""
    path = pathlib.Path(path)
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
    conn = connect(path, readonly=not writable)
    if writable and file_size(sidecars(path)[0]) > 0:
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
    conn.pragma("query_only", "ON")
    return conn


def open_reader(path: StrPath) -> apsw.Connection:
    """connect_reader(), read once; on a full disk (no room for the -shm a WAL reader needs)
    a connection that keeps its WAL index in memory instead: locking_mode EXCLUSIVE, no
    checkpoint on close of a -wal that holds commits, query_only.  It reads the WAL too,
    and writes nothing."""
    path = pathlib.Path(path)
    missing = missing_sidecars(path)
    conn = connect_reader(path)
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").get  # noqa: B018 (reads the file)
        return conn
    except (apsw.IOError, apsw.FullError, apsw.CantOpenError) as first:
        conn.close()
        remove_unused_sidecars(path, missing)
        if not os.access(path, os.W_OK):
            raise
        try:
            conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
        except apsw.Error:
            raise first from None
        try:
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            if file_size(sidecars(path)[0]) > 0:   # else closing tidies away the -wal it makes
                conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
            conn.pragma("locking_mode", "EXCLUSIVE")
            conn.pragma("query_only", "ON")
            conn.execute("SELECT count(*) FROM sqlite_schema").get  # noqa: B018
        except apsw.Error:
            conn.close()
            raise first from None
        return conn


def configure(conn: apsw.Connection, *, readonly: bool, journal_size_limit: int = JOURNAL_SIZE_LIMIT) -> None:
    """The pragmas every connection gets."""
    conn.pragma("foreign_keys", "ON")
    if not readonly:
        _wal_mode(conn)
        conn.pragma("synchronous", "NORMAL")
        conn.pragma("journal_size_limit", int(journal_size_limit))


def _wal_mode(conn: apsw.Connection) -> None:
    """journal_mode=WAL, waiting for the lock it needs as long as busy_timeout says: SQLite
    answers BUSY at once there (it does not call the busy handler), so two first opens of a
    new database at the same moment would otherwise fail with 'locked'."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            conn.pragma("journal_mode", "WAL")
            return
        except apsw.BusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def dict_rows(cursor: apsw.Cursor) -> Iterator[dict[str, Any]]:
    names = None
    for row in cursor:
        if names is None:
            names = [d[0] for d in cursor.get_description()]
        yield dict(zip(names, row))


def table_columns(conn: apsw.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    """Whether a and b name the same file (or would, once created)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)
