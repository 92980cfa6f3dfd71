"""The schema: numbered files in loadtester/store/schema/ (the repository's top-level schema/
links there), applied in order, one transaction each; the version is PRAGMA user_version and
the file is marked as ours with PRAGMA application_id.  A newer or foreign file is refused."""
from __future__ import annotations

import importlib.resources
import pathlib
import re
import struct
from typing import TYPE_CHECKING

import apsw

from loadtester.store.connection import StoreError, error_reason, transaction

if TYPE_CHECKING:
    from _typeshed import StrPath

APPLICATION_ID = 0x4C545354          # 'LTST'
SCHEMA_VERSION = len(list((pathlib.Path(__file__).parent / "schema").glob("[0-9][0-9][0-9]_*.sql")))
_SQLITE_MAGIC = b"SQLite format 3\x00"
_MIGRATION_RE = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.sql$")


def migration_files() -> list[tuple[int, str, str]]:
    """[(version, file name, sql)] from loadtester/store/schema/, numbered 001, 002, ... without gaps."""
    found = []
    try:
        folder = importlib.resources.files("loadtester.store") / "schema"
        for entry in folder.iterdir():
            match = _MIGRATION_RE.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    except OSError as exc:
        raise StoreError(f"loadtester is installed without its schema files ({error_reason(exc)})") from exc
    found.sort()
    if [v for v, _, _ in found] != list(range(1, SCHEMA_VERSION + 1)):
        raise StoreError("loadtester is installed with missing or extra schema files "
                         f"(found {[n for _, n, _ in found]}, expected 001..{SCHEMA_VERSION:03d})")
    return found


def read_header(path: pathlib.Path) -> bytes | None:
    """The first 100 bytes, b'' for an empty file, None when there is no file."""
    try:
        with open(path, "rb") as f:
            return f.read(100)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise StoreError(f"{path} is a directory, not a database file") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {error_reason(exc)}") from exc


def check_identity(path: StrPath, app_id: int, version: int, has_tables: bool) -> None:
    if app_id not in (0, APPLICATION_ID):
        raise StoreError(f"{path} is not a loadtester database "
                         f"(it belongs to another application: application_id 0x{app_id & 0xFFFFFFFF:08X})")
    if app_id == 0 and has_tables:
        raise StoreError(f"{path} is not a loadtester database (it has tables but no loadtester "
                         "application_id); use another --db path")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer loadtester (schema {version} > "
                         f"{SCHEMA_VERSION}); upgrade loadtester")


def check_header(path: StrPath, header: bytes) -> None:
    """Refuse foreign files from their header alone, before SQLite touches them."""
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path} is not a loadtester database (not an SQLite file)")
    version, = struct.unpack_from(">i", header, 60)
    app_id, = struct.unpack_from(">I", header, 68)
    check_identity(path, app_id, version, has_tables=False)


def migrate(conn: apsw.Connection, path: StrPath) -> None:
    if conn.pragma("user_version") >= SCHEMA_VERSION and conn.pragma("application_id") == APPLICATION_ID:
        return
    for version, name, sql in migration_files():
        with transaction(conn):          # BEGIN IMMEDIATE: one migrator at a time
            current = conn.pragma("user_version")
            if current >= version:
                continue
            if current == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_schema").get
                check_identity(path, conn.pragma("application_id") & 0xFFFFFFFF, 0, tables > 0)
            try:
                conn.execute(sql)
            except apsw.SQLError as exc:
                raise StoreError(f"schema migration {name} failed on {path}: {error_reason(exc)}") from exc
            conn.pragma("user_version", version)
            conn.pragma("application_id", APPLICATION_ID)
