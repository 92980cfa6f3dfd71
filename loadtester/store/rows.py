"""Writing a run's rows: request records and windows, as the writer thread and the replay of a
spool (recovery) both store them.  Callers hold the transaction."""
from __future__ import annotations

import json
import pathlib
import struct
from collections.abc import Mapping
from typing import Any

import apsw

from loadtester.model import ERROR_KINDS, RECORD_SIZE, Window
from loadtester.store.connection import StoreError

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


def json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def encode_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json_text(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return value


def insert_records(conn: apsw.Connection, run_id: int, blob: bytes, seq: int) -> int:
    """One buffer of engine records as request rows numbered from seq; returns how many."""
    n = len(blob) // RECORD_SIZE
    if n == 0:
        return 0
    before = conn.execute("SELECT max(id) FROM request_records").get or 0
    # Rows go in straight from the buffer: (timestamp, latency, wait_us, bytes, code).
    conn.executemany(_INSERT_RECORDS, _ROW.iter_unpack(blob))
    last = conn.last_insert_rowid()
    if last - before != n:                        # ids are max+1 under our write lock
        raise StoreError(f"request ids not contiguous ({before}+{n} != {last})")
    conn.execute(_INSERT_BATCH, (run_id, seq, before + 1, last))
    return n


def next_seq(conn: apsw.Connection, run_id: int) -> int:
    """The seq the run's next request row gets."""
    return int(conn.execute(
        "SELECT coalesce(max(first_seq + last_id - first_id + 1), 0) FROM request_batches "
        "WHERE test_run_id = ?", (run_id,)).get)


def insert_window(conn: apsw.Connection, run_id: int, window: Window) -> str:
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
            run_id, int(window.get("worker", 0)), int(window["second"]),
            int(counters.get("responses", 0)) + error_total, int(counters.get("successes", 0)),
            error_total, json_text(error_kinds) if error_kinds else None,
            int(counters.get("bytes", 0)), json_text(status) if status else None,
            encode_value(window.get("latency")), encode_value(window.get("service")),
            window.get("loop_lag_us"), counters.get("max_wait_us"), window.get("in_flight"),
            window.get("cpu_us"),
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        return "bad"
    conn.execute(_INSERT_WINDOW, params)
    return "ok" if conn.changes() > 0 else "duplicate"


def mark_spooled(conn: apsw.Connection, run_id: int, offset: int) -> None:
    """The run's spool is stored up to this logical offset (in the rows' transaction)."""
    conn.execute("UPDATE test_runs SET spooled = ? WHERE id = ? AND coalesce(spooled, 0) < ?",
                 (offset, run_id, offset))
