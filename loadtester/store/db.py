"""Opening the database: the one place that does (pragmas, header checks, migrations; a
writable open also recovers what dead writers left, see recovery.py).  A read-only open
never writes."""
from __future__ import annotations

import os
import pathlib
import sys
from typing import TYPE_CHECKING, cast

import apsw

from loadtester.store import recovery
from loadtester.store.connection import (
    StoreError,
    configure,
    connect,
    error_reason,
    missing_sidecars,
    open_reader,
    remove_unused_sidecars,
    store_error,
)
from loadtester.store.locks import run_lock_path, try_lock
from loadtester.store.migrations import APPLICATION_ID, check_header, check_identity, migrate, read_header

if TYPE_CHECKING:
    from _typeshed import StrPath

DEFAULT_DB_PATH = "data/loadtest.db"


def resolve_db_path(cli_value: str | None) -> pathlib.Path:
    """--db beats the DB_PATH environment variable beats DEFAULT_DB_PATH (relative to cwd)."""
    for value in (cli_value, os.environ.get("DB_PATH")):
        if value:
            return pathlib.Path(os.path.expanduser(str(value)))
    return pathlib.Path(DEFAULT_DB_PATH)


def inspect_schema(conn: apsw.Connection, path: StrPath) -> int:
    """Check identity and readability of the core tables; return user_version."""
    # One statement, one snapshot: another process may be creating the schema right now.
    app_id, version, tables = cast("tuple[int, int, int]", conn.execute(
        "SELECT a.application_id, v.user_version, (SELECT count(*) FROM sqlite_schema) "
        "FROM pragma_application_id AS a, pragma_user_version AS v").fetchone())
    app_id &= 0xFFFFFFFF
    check_identity(path, app_id, version, has_tables=tables > 0 and app_id == 0)
    if app_id == APPLICATION_ID and version >= 1:
        # Walks the runs table (small: one row per run), so a damaged core shows up now.
        conn.execute("SELECT count(*), max(id) FROM test_runs NOT INDEXED").fetchall()
        conn.execute("SELECT count(*) FROM test_runs WHERE status = 'running'").fetchall()
    return version


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

    missing = missing_sidecars(path)
    if header and not readonly:
        # Look before writing anything: a read-only connection cannot change the file.
        probe = None
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
                remove_unused_sidecars(path, missing, mapped_shm_too=True)   # refused

    conn = None
    try:
        conn = open_reader(path) if readonly else connect(path, readonly=False)
        version = inspect_schema(conn, path)
        if readonly and version == 0:
            raise StoreError(f"{path} holds no loadtester data yet")
        configure(conn, readonly=readonly)
        if not readonly:
            migrate(conn, path)
            recovery.recover(conn, path)
        return conn
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if header:
            remove_unused_sidecars(path, missing)
        if isinstance(exc, (apsw.Error, OSError)):
            raise store_error(path, exc, "open") from exc
        raise


__all__ = ["DEFAULT_DB_PATH", "inspect_schema", "open_database", "prepare_parent", "resolve_db_path",
           "run_lock_path", "try_lock"]
