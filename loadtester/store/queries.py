"""Every read of stored runs: one public function per question asked of the database."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import apsw

from loadtester.model import ERROR_KINDS, Window
from loadtester.store.connection import StoreError, conn_path, dict_rows, table_columns, translated
from loadtester.store.locks import writer_gone
from loadtester.store.variants import unpack_variant_counts

if TYPE_CHECKING:
    from typing import Any

HISTOGRAM_COLUMNS = ("latency_hist", "service_hist")


_MAX_ID = (1 << 63) - 1
_LAST_N = re.compile(r"^last(?:\s*~\s*(\d+))?$", re.IGNORECASE)


def find_run(conn: apsw.Connection, ref: int | str) -> dict[str, Any] | None:
    """A run by integer id, 'last' (most recently started), 'last~N' (N runs before the last),
    or a uuid prefix of >= 4 characters.

    The test_runs row as stored: JSON columns (headers, config, ...) as JSON text, blobs as bytes."""
    ref = str(ref).strip()
    with translated(conn_path(conn)):
        back = _LAST_N.match(ref)
        if back:
            if len(back.group(1) or "") > 18:          # past SQLite's integers: no such run
                return None
            rows = list(dict_rows(conn.execute(
                "SELECT * FROM test_runs ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?",
                (int(back.group(1) or 0),))))
            return rows[0] if rows else None
        if ref.isdigit():
            if int(ref) > _MAX_ID:                     # past SQLite's integers: no such run
                return None
            rows = list(dict_rows(conn.execute("SELECT * FROM test_runs WHERE id = ?", (int(ref),))))
            if rows:
                return rows[0]
        if len(ref) < 4:
            if ref.isdigit():
                return None
            raise StoreError(f"run reference {ref!r} is too short: give an id, 'last', "
                             "or at least 4 characters of a uuid")
        prefix = ref.lower()
        rows = list(dict_rows(conn.execute(
            "SELECT * FROM test_runs WHERE uuid >= ?1 AND uuid < ?1 || char(1114111) "
            "ORDER BY id LIMIT 2", (prefix,))))
    if len(rows) > 1:
        raise StoreError(f"run reference {ref!r} is ambiguous: it matches more than one run uuid")
    return rows[0] if rows else None


def list_runs(conn: apsw.Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The newest runs first: test_runs rows as stored, every column but the histogram blobs."""
    with translated(conn_path(conn)):
        columns = [c for c in table_columns(conn, "test_runs") if c not in HISTOGRAM_COLUMNS]
        cursor = conn.execute(f"SELECT {', '.join(columns)} FROM test_runs "
                              "ORDER BY started_at DESC, id DESC LIMIT ?", (int(limit),))
        return list(dict_rows(cursor))


def run_windows(conn: apsw.Connection, run_id: int, after_second: int = -1) -> list[Window]:
    """A run's windows (those after `after_second`) by second then worker: the metric_windows
    columns as stored (JSON as text), plus `counters`, `latency` and `service` in the shape
    RunWriter.submit_window() takes (counters["status"] has int keys; counters["errors"] is
    indexed by error kind)."""
    return list(iter_run_windows(conn, run_id, after_second))


def iter_run_windows(conn: apsw.Connection, run_id: int, after_second: int = -1) -> Iterator[Window]:
    """run_windows, read as they are used (a long run's windows never all in memory)."""
    with translated(conn_path(conn)):
        cursor = conn.execute("SELECT * FROM metric_windows WHERE test_run_id = ? AND second > ? "
                              "ORDER BY second, worker", (int(run_id), int(after_second)))
        for row in dict_rows(cursor):
            kinds = json.loads(row["error_kinds"]) if row["error_kinds"] else {}
            errors = [0] * len(ERROR_KINDS)
            for name, count in kinds.items():
                if name in ERROR_KINDS:
                    errors[ERROR_KINDS.index(name)] = count
            status = ({int(k): v for k, v in json.loads(row["status_codes"]).items()}
                      if row["status_codes"] else {})
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
            yield cast(Window, row)


# A run's request rows in seq order (one parameter: the run id); each caller picks its columns.
REQUEST_ROWS_FROM = (
    "FROM request_batches AS b JOIN request_records AS r ON r.id BETWEEN b.first_id AND b.last_id "
    "WHERE b.test_run_id = ? ORDER BY b.first_seq, r.id")


def iter_requests(conn: apsw.Connection, run_id: int) -> Iterator[dict[str, Any]]:
    """A run's request rows in seq order, as request_metrics shows them (latency etc. in µs)."""
    run_id = int(run_id)
    sql = ("SELECT b.first_seq + (r.id - b.first_id), r.timestamp, r.latency, r.wait_us, r.bytes, r.code "
           + REQUEST_ROWS_FROM)
    with translated(conn_path(conn)):
        for seq, timestamp, latency, wait_us, nbytes, code in conn.execute(sql, (run_id,)):
            status = code & 0xFFFF
            error = (code >> 16) & 0xFF
            yield {"test_run_id": run_id, "seq": seq, "timestamp": timestamp, "latency": latency,
                   "wait_us": wait_us, "success": int(error == 0 and 100 <= status < 400),
                   "status_code": status, "error": error, "bytes": nbytes, "worker": (code >> 24) & 0xFF}


def iter_request_codes(conn: apsw.Connection, run_id: int) -> Iterator[tuple[int, int, int, int, int]]:
    """A run's request rows in seq order as stored: (timestamp, latency, wait_us, bytes, code),
    code = status | error << 16 | worker << 24."""
    with translated(conn_path(conn)):
        yield from conn.execute("SELECT r.timestamp, r.latency, r.wait_us, r.bytes, r.code "
                                + REQUEST_ROWS_FROM, (int(run_id),))


def iter_request_tuples(conn: apsw.Connection, run_id: int) -> Iterator[tuple[int, ...]]:
    """A run's request rows in seq order as the tuples (test_run_id, seq, timestamp, latency,
    wait_us, success, status_code, error, bytes, worker): the columns (and order) of
    REQUEST_COLUMNS and iter_requests(), without a dict per row (exports of millions)."""
    sql = ("SELECT b.test_run_id, b.first_seq + (r.id - b.first_id), r.timestamp, r.latency, "
           "r.wait_us, ((r.code & 0xFF0000) = 0 AND (r.code & 0xFFFF) BETWEEN 100 AND 399), "
           "r.code & 0xFFFF, (r.code >> 16) & 0xFF, r.bytes, (r.code >> 24) & 0xFF "
           + REQUEST_ROWS_FROM)
    with translated(conn_path(conn)):
        yield from conn.execute(sql, (int(run_id),))


def iter_variant_counts(conn: apsw.Connection, run_id: int) -> Iterator[dict[str, Any]]:
    """A --data run's request variants in send order: {row, request, requests, successes,
    errors} each (store/variants.py); nothing for a run without data."""
    with translated(conn_path(conn)):
        found = list(conn.execute("SELECT variant_counts FROM test_runs WHERE id = ?",
                                  (int(run_id),)))
    if found and found[0][0]:
        yield from unpack_variant_counts(found[0][0])


REQUEST_COLUMNS = ("test_run_id", "seq", "timestamp", "latency", "wait_us", "success", "status_code",
                   "error", "bytes", "worker")


def partial_totals(conn: apsw.Connection, run_id: int) -> dict[str, int | None]:
    """total_requests, success_count, error_count and bytes of a run that has no summary (it
    never finished): what its stored windows add up to, else its request rows."""
    run_id = int(run_id)
    with translated(conn_path(conn)):
        total, successes, nbytes = cast("tuple[Any, Any, Any]", conn.execute(
            "SELECT sum(requests), sum(successes), sum(bytes) FROM metric_windows "
            "WHERE test_run_id = ?", (run_id,)).fetchone())
        if total is None:
            total, successes, nbytes = cast("tuple[Any, Any, Any]", conn.execute(
                "SELECT count(*), sum(success), sum(bytes) FROM request_metrics "
                "WHERE test_run_id = ?", (run_id,)).fetchone())
            if not total:
                total = successes = nbytes = None
    return {"total_requests": total, "success_count": successes,
            "error_count": None if total is None else total - (successes or 0), "bytes": nbytes}


def settle_dead_runs(conn: apsw.Connection, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as a writable open would leave them: a run stored as 'running' whose writer is
    gone (nobody holds its run lock) shown 'interrupted', with the totals of what it stored.
    Changes nothing (for commands that only read)."""
    out = []
    for row in runs:
        if row.get("status") == "running" and writer_gone(conn_path(conn), row["uuid"]):
            row = dict(row, status="interrupted",
                       stop_reason=row.get("stop_reason") or DEAD_WRITER_REASON)
            for key, value in partial_totals(conn, row["id"]).items():
                if row.get(key) is None:
                    row[key] = value
        out.append(row)
    return out


DEAD_WRITER_REASON = "the writing process ended without finishing the run"

_RUN_TABLES = ("metric_windows", "request_batches")


def has_rows(conn: apsw.Connection, table: str, run_id: int) -> bool:
    """Whether the run has any row in `table` (metric_windows or request_batches)."""
    if table not in _RUN_TABLES:
        raise ValueError(f"table must be one of {_RUN_TABLES}, not {table!r}")
    with translated(conn_path(conn)):
        return bool(conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE test_run_id = ? LIMIT 1)",
            (int(run_id),)).get)


def window_second_span(conn: apsw.Connection, run_id: int) -> tuple[int, int] | None:
    """(first, last) second of the run's stored windows (0-based); None without windows."""
    with translated(conn_path(conn)):
        span = conn.execute("SELECT min(second), max(second) FROM metric_windows "
                            "WHERE test_run_id = ?", (int(run_id),)).fetchone()
    return None if span is None or span[0] is None else (int(span[0]), int(span[1]))


# --------------------------------------------------------------------------- reads for the web app
# (loadtester.web: the summary columns it shows for a run, read on every poll)

WEB_RUN_COLUMNS = ("id, uuid, host, mask_host, total_users, ramp_up_sec, duration, status, started_at, "
                   "completed_at, total_requests, success_count, error_count, avg_latency, rps, method, "
                   "url, mode, rate, workers, p50, p99, label, stop_reason, measured_duration, "
                   "requests_limit, "
                   # the verdict's (JSON text): pass/fail per threshold, the first message of
                   # each error kind, errors per kind, workers that died
                   "thresholds, error_messages, errors_by_kind, worker_errors, "
                   # the run page's settings (api.settings_of)
                   "config")


def run_by_uuid(conn: apsw.Connection, run_uuid: str) -> dict[str, Any] | None:
    """The test_runs row (as find_run gives it) whose uuid is exactly `run_uuid`."""
    row = find_run(conn, run_uuid)
    return row if row is not None and row["uuid"] == run_uuid else None


def run_summary(conn: apsw.Connection, run_uuid: str) -> dict[str, Any] | None:
    """The WEB_RUN_COLUMNS of the run whose uuid is exactly `run_uuid`."""
    cursor = conn.execute(f"SELECT {WEB_RUN_COLUMNS} FROM test_runs WHERE uuid = ?", (run_uuid,))
    return next(dict_rows(cursor), None)


def running_runs(conn: apsw.Connection) -> list[dict[str, Any]]:
    """The WEB_RUN_COLUMNS of every run stored as 'running', the newest first."""
    cursor = conn.execute(f"SELECT {WEB_RUN_COLUMNS} FROM test_runs WHERE status = 'running' "
                          "ORDER BY started_at DESC, id DESC")
    return list(dict_rows(cursor))


# The orders a page of runs can come in (runs_page): name -> ORDER BY.
RUN_ORDERS = {
    "newest": "started_at DESC, id DESC", "oldest": "started_at ASC, id ASC",
    "rps": "rps IS NULL, rps DESC, id DESC", "p99": "p99 IS NULL, p99 DESC, id DESC",
    "errors": "coalesce(error_count, 0) DESC, id DESC",
    "duration": "coalesce(measured_duration, duration) IS NULL, "
                "coalesce(measured_duration, duration) DESC, id DESC",
    "users": "total_users IS NULL, total_users DESC, id DESC",
}


def _run_filter(search: str | None) -> tuple[str, tuple[str, ...]]:
    """(WHERE clause, its parameters) for runs whose label or URL contain `search` (any case;
    the URL of a run stored with mask_host is not searched: a match would tell its host)."""
    if not search:
        return "", ()
    pattern = "%" + re.sub(r"([\\%_])", r"\\\1", search) + "%"
    return (" WHERE (label LIKE ?1 ESCAPE '\\' OR (mask_host = 0 AND url LIKE ?1 ESCAPE '\\'))",
            (pattern,))


def runs_page(conn: apsw.Connection, limit: int, offset: int, search: str | None = None,
              order: str = "newest") -> list[dict[str, Any]]:
    """The WEB_RUN_COLUMNS of `limit` runs after the `offset` first, in RUN_ORDERS[order]
    (newest first by default), of those whose label or URL contain `search` (when given)."""
    where, params = _run_filter(search)
    n = len(params)
    cursor = conn.execute(f"SELECT {WEB_RUN_COLUMNS} FROM test_runs{where} "
                          f"ORDER BY {RUN_ORDERS[order]} LIMIT ?{n + 1} OFFSET ?{n + 2}",
                          (*params, int(limit), int(offset)))
    return list(dict_rows(cursor))


def count_runs(conn: apsw.Connection, search: str | None = None) -> int:
    """How many runs are stored (whose label or URL contain `search`, when given)."""
    where, params = _run_filter(search)
    return int(conn.execute(f"SELECT count(*) FROM test_runs{where}", params).get)


def previous_run_uuid(conn: apsw.Connection, run_id: int, url: str | None) -> str | None:
    """The uuid of the run started before run `run_id` against the same URL (else before it at
    all): the baseline to compare it with; None when it is the first."""
    for same_url in ((True, False) if url else (False,)):
        where = "id < ?1" + (" AND url = ?2" if same_url else "")
        params = (int(run_id), url) if same_url else (int(run_id),)
        found = conn.execute(f"SELECT uuid FROM test_runs WHERE {where} AND status != 'running' "
                             "ORDER BY id DESC LIMIT 1", params).fetchall()
        if found:
            return str(found[0][0])
    return None
