"""The SQLite store, through APSW.  Every SQL statement of loadtester lives in this package.

    connection   pragmas, BEGIN IMMEDIATE transactions, StoreError (one line per failure)
    migrations   schema/*.sql applied in order; PRAGMA user_version; newer files refused
    db           open_database(): the one place that opens (checks, migrates, recovers)
    locks        run locks: which 'running' rows have a live writer; the space reserve
    spool        a run's named spool file: records and windows land there first
    rows         inserting request rows and windows (the writer, and replays)
    recovery     on a writable open: replay spools of dead writers, reap their runs
    writer       RunWriter: a run's rows off the hot path (spool, one thread)
    queries      every read: runs, windows, request rows
    maintenance  backup (online), restore (checked), check, stats, prune, delete_run

Requests are stored as small as SQLite allows (see schema/001_init.sql): `request_records`
(one row per request, keyed by a database-wide integer id) plus `request_batches` (which run
and per-run sequence number each batch of ids belongs to); the VIEW `request_metrics` gives the
PipeOps shape, one row per request with test_run_id, seq, timestamp, latency, success, ....
"""
from loadtester.store.connection import JOURNAL_SIZE_LIMIT, StoreError
from loadtester.store.db import DEFAULT_DB_PATH, open_database, resolve_db_path
from loadtester.store.locks import run_lock_path
from loadtester.store.maintenance import backup, check, delete_run, prune, prune_preview, restore, stats
from loadtester.store.migrations import APPLICATION_ID, SCHEMA_VERSION
from loadtester.store.queries import (
    REQUEST_COLUMNS,
    find_run,
    iter_request_tuples,
    iter_requests,
    iter_variant_counts,
    list_runs,
    run_windows,
    settle_dead_runs,
)
from loadtester.store.variants import (
    VARIANT_COLUMNS,
    merge_variant_counts,
    pack_variant_counts,
    variants_served,
)
from loadtester.store.writer import RunWriter

__all__ = [
    "APPLICATION_ID", "DEFAULT_DB_PATH", "JOURNAL_SIZE_LIMIT", "REQUEST_COLUMNS", "SCHEMA_VERSION",
    "VARIANT_COLUMNS", "RunWriter", "StoreError", "backup", "check", "delete_run", "find_run",
    "iter_request_tuples", "iter_requests", "iter_variant_counts", "list_runs",
    "merge_variant_counts", "open_database", "pack_variant_counts", "prune", "prune_preview",
    "resolve_db_path", "restore", "run_lock_path", "run_windows", "settle_dead_runs", "stats",
    "variants_served",
]
