"""Reads the web app needs beyond the summary columns (queries.WEB_RUN_COLUMNS), made only of
loadtester.store.queries functions (no SQL here).  Each takes an open apsw connection."""
from __future__ import annotations

from typing import Any

import apsw

from loadtester.store import queries

# What a run's verdict (verdict.judge) and its settings (api.settings_of) need that the summary
# columns do not hold.
DETAIL_COLUMNS = ("thresholds", "error_messages", "errors_by_kind", "worker_errors", "config")


def detail_columns(conn: apsw.Connection, run_uuid: str) -> dict[str, Any]:
    """The DETAIL_COLUMNS of the run (JSON text as stored); {} when there is no such run."""
    row = queries.run_by_uuid(conn, run_uuid)
    return {key: row.get(key) for key in DETAIL_COLUMNS} if row is not None else {}


def run_id_of(conn: apsw.Connection, run_uuid: str) -> int | None:
    """The integer id of the run stored under `run_uuid` (None while it is not stored)."""
    row = queries.run_summary(conn, run_uuid)
    return int(row["id"]) if row is not None else None


def newest_runs(conn: apsw.Connection, limit: int) -> list[dict[str, Any]]:
    """The summary columns of the `limit` newest runs, newest first."""
    return queries.runs_page(conn, limit=limit, offset=0)


def full_run(conn: apsw.Connection, run_uuid: str) -> dict[str, Any] | None:
    """Every column of the run (histogram blobs included)."""
    return queries.run_by_uuid(conn, run_uuid)


def in_flight_now(conn: apsw.Connection, run_id: int, last_second: int) -> int | None:
    """Requests in flight at the end of the run's newest stored second (0-based
    `last_second` or later), summed over the workers that stored it; None without windows."""
    windows = queries.run_windows(conn, run_id, after_second=last_second - 1)
    if not windows:
        return None
    newest = max(w["second"] for w in windows)
    return sum(int(w.get("in_flight") or 0) for w in windows if w["second"] == newest)
