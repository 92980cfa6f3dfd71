"""Opening the database: the one place that does (pragmas, header checks, migrations), and
the run locks that tell a dead writer's 'running' row from a live one."""
from __future__ import annotations

import fcntl
import os
import pathlib
import sys
from typing import TYPE_CHECKING, cast

import apsw

from loadtester.store.connection import (
    StoreError,
    configure,
    connect,
    connect_reader,
    error_reason,
    remove_quietly,
    sidecars,
    store_error,
    transaction,
)
from loadtester.store.migrations import APPLICATION_ID, check_header, check_identity, migrate, read_header
from loadtester.units import utc_now_iso

if TYPE_CHECKING:
    from _typeshed import StrPath

DEFAULT_DB_PATH = "data/loadtest.db"


def resolve_db_path(cli_value: str | None) -> pathlib.Path:
    """--db beats the DB_PATH environment variable beats DEFAULT_DB_PATH (relative to cwd)."""
    for value in (cli_value, os.environ.get("DB_PATH")):
        if value:
            return pathlib.Path(os.path.expanduser(str(value)))
    return pathlib.Path(DEFAULT_DB_PATH)


def run_lock_path(db_path: StrPath, run_uuid: str) -> pathlib.Path:
    """The lock file a live run holds (flock, exclusive) next to its database."""
    db = pathlib.Path(os.path.realpath(db_path))
    return db.with_name(f"{db.name}.run-{run_uuid}.lock")


def inspect_schema(conn: apsw.Connection, path: StrPath) -> int:
    """Check identity and readability of the core tables; return user_version."""
    app_id = conn.pragma("application_id") & 0xFFFFFFFF
    version: int = conn.pragma("user_version")
    tables = conn.execute("SELECT count(*) FROM sqlite_schema").get
    check_identity(path, app_id, version, has_tables=tables > 0 and app_id == 0)
    if app_id == APPLICATION_ID and version >= 1:
        # Walks the runs table (small: one row per run), so a damaged core shows up now.
        conn.execute("SELECT count(*), max(id) FROM test_runs NOT INDEXED").fetchall()
        conn.execute("SELECT count(*) FROM test_runs WHERE status = 'running'").fetchall()
    return version


def try_lock(lock_path: pathlib.Path) -> tuple[bool, int | None]:
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
                conn.execute(_REAP_SQL, {"now": utc_now_iso(), "id": run_id})
                if conn.changes():
                    reaped.append(run_id)
            if fd is not None:
                remove_quietly(lock_path)
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


def prepare_parent(path: pathlib.Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StoreError(f"cannot create database {path}: {parent} exists and is not a directory") from None
    except NotADirectoryError:
        raise StoreError(f"cannot create database {path}: a part of {parent} is not a directory") from None
    except OSError as exc:
        raise StoreError(f"cannot create directory {parent} for database {path}: "
                         f"{error_reason(exc)}") from exc


def open_database(path: StrPath, *, readonly: bool = False, create: bool = True) -> apsw.Connection:
    """Open (creating and migrating if needed) a loadtester database, with our pragmas.

    Refuses, with StoreError and without writing to it: a file that is not SQLite, an SQLite
    file of another application, one written by a newer loadtester, one whose core is corrupt.
    readonly=True never writes: no migrations, no marking of interrupted runs.
    """
    path = pathlib.Path(path)
    header = read_header(path)
    if header is None:
        if readonly or not create:
            raise StoreError(f"no database at {path}")
        prepare_parent(path)
    elif header:
        check_header(path, header)
    if not readonly and not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write database {path}: directory {path.parent} is not writable")

    if header:
        # Look before writing anything: a read-only connection cannot change the file.
        probe = None
        wal, shm, _ = sidecars(path)
        made_by_probe = [p for p in (wal, shm) if not p.exists()]
        try:
            probe = connect(path, readonly=True)
            inspect_schema(probe, path)
        except StoreError:
            raise
        except (apsw.CorruptError, apsw.NotADBError) as exc:
            raise store_error(path, exc) from exc
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
                        remove_quietly(sidecar)

    conn = None
    try:
        conn = connect_reader(path) if readonly else connect(path, readonly=False)
        version = inspect_schema(conn, path)
        if readonly and version == 0:
            raise StoreError(f"{path} holds no loadtester data yet")
        configure(conn, readonly=readonly)
        if not readonly:
            migrate(conn, path)
            _reap(conn, path)
        return conn
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, (apsw.Error, OSError)):
            raise store_error(path, exc, "open") from exc
        raise
