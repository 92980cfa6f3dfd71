"""The SQLite store, through APSW.  Every SQL statement of loadtester lives in this package.

    connection   pragmas, BEGIN IMMEDIATE transactions, StoreError (one line per failure)
    migrations   schema/*.sql applied in order; PRAGMA user_version; newer files refused
    db           open_database(): the one place that opens (checks, migrates, reaps dead runs)
    writer       RunWriter: a run's rows off the hot path (queue, spool, one thread)
    queries      every read: runs, windows, request rows
    maintenance  backup (online), restore (checked), check, stats, prune

Requests are stored as small as SQLite allows (see schema/001_init.sql): `request_records`
(one row per request, keyed by a database-wide integer id) plus `request_batches` (which run
and per-run sequence number each batch of ids belongs to); the VIEW `request_metrics` gives the
PipeOps shape, one row per request with test_run_id, seq, timestamp, latency, success, ....
"""
from loadtester.store.connection import JOURNAL_SIZE_LIMIT, StoreError
from loadtester.store.db import DEFAULT_DB_PATH, open_database, resolve_db_path, run_lock_path
from loadtester.store.maintenance import backup, check, prune, restore, stats
from loadtester.store.migrations import APPLICATION_ID, SCHEMA_VERSION
from loadtester.store.queries import find_run, iter_requests, list_runs, run_windows
from loadtester.store.writer import RunWriter

__all__ = [
    "APPLICATION_ID", "DEFAULT_DB_PATH", "JOURNAL_SIZE_LIMIT", "SCHEMA_VERSION", "RunWriter",
    "StoreError", "backup", "check", "find_run", "iter_requests", "list_runs", "open_database",
    "prune", "resolve_db_path", "restore", "run_lock_path", "run_windows", "stats",
]
