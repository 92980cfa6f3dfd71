"""A run's per-second series as the web app and the reports show it, merged from its stored
windows (analysis.aggregate) and cached per run so that each poll reads only the newer windows."""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

import apsw

from loadtester.analysis import aggregate
from loadtester.model import Window
from loadtester.store.queries import run_windows

Row = dict[str, Any]


def second_row(group: list[Window]) -> tuple[Row, aggregate.Totals]:
    """One timeseries row from one second's windows (all workers), and their Totals.
    in_flight: requests in flight at the end of the second (a closed-loop run: its active
    connections; None when no window stored it); status_codes and error_kinds: that second's
    responses by status code and transport errors by kind."""
    base = aggregate.merged_seconds(group, percentiles=(50, 95, 99), detail=True)[0]
    attempts = base["requests"]
    counters = base["totals"].counters
    latency = base["totals"].latency
    in_flight = [int(n) for w in group if (n := w.get("in_flight")) is not None]
    row = {
        "second": base["second"] + 1,                   # 1-based: second N covers (N-1, N]
        "rps": base["responses"],                      # responses completed in this second
        "requests": attempts,
        "errors": base["errors"],                      # attempts that were not successes
        "success_rate": (base["successes"] / attempts) if attempts else None,
        "p50_ms": base["p50_ms"], "p95_ms": base["p95_ms"], "p99_ms": base["p99_ms"],
        "max_ms": base["max_ms"],
        "avg_ms": latency.mean_us / 1000 if latency.total else None,
        "in_flight": sum(in_flight) if in_flight else None,
        "status_codes": {str(code): n for code, n in sorted(counters.status_counts().items())},
        "error_kinds": {kind: n for kind, n in counters.errors_by_kind().items() if n},
    }
    return row, base["totals"]


@dataclass
class SeriesSnapshot:
    closed: list[Row]           # seconds every worker has stored (final)
    rows: list[Row]             # closed + the newest, still open seconds
    totals: aggregate.Totals    # over all rows


class Series:
    """One run's per-second rows, merged incrementally: a second is merged once, when it is
    closed (every worker stored it, or the run is over); later polls read only newer rows."""

    def __init__(self, run_id: int, workers: int | None):
        self.lock = threading.Lock()
        self.run_id = run_id
        self.workers = max(1, int(workers or 1))
        self.closed_upto = -1                        # last closed stored (0-based) second
        self.rows: list[Row] = []
        self.totals = aggregate.Totals()
        self.tail_rows: list[Row] = []
        self.tail_totals = aggregate.Totals()
        self.final = False

    def update(self, conn: apsw.Connection, running: bool) -> None:
        if self.final:
            return
        groups = aggregate.by_second(run_windows(conn, self.run_id, after_second=self.closed_upto))
        self.tail_rows, self.tail_totals = [], aggregate.Totals()
        closing = True
        for second, group in groups.items():
            row, totals = second_row(group)
            if closing and (not running or len(group) >= self.workers):
                self.rows.append(row)
                self.totals.merge(totals)
                self.closed_upto = second
            else:
                closing = False
                self.tail_rows.append(row)
                self.tail_totals.merge(totals)
        if not running:
            self.final = True

    def snapshot(self) -> SeriesSnapshot:
        """A copy the caller may read without the lock (the next update mutates these)."""
        totals = aggregate.Totals()
        totals.merge(self.totals)
        totals.merge(self.tail_totals)
        return SeriesSnapshot(closed=list(self.rows), rows=self.rows + self.tail_rows, totals=totals)


class SeriesCache:
    """The Series of the `max_runs` runs asked about last."""

    def __init__(self, max_runs: int = 64):
        self._lock = threading.Lock()
        self._runs: collections.OrderedDict[tuple[int, str], Series] = collections.OrderedDict()
        self.max_runs = max_runs

    def get(self, conn: apsw.Connection, row: Row) -> SeriesSnapshot:
        """The series of the run `row` (a test_runs row: id, uuid, workers, status), brought
        up to date."""
        key = (row["id"], row["uuid"])
        with self._lock:
            series = self._runs.get(key)
            if series is None:
                series = self._runs[key] = Series(row["id"], row.get("workers") or 1)
            self._runs.move_to_end(key)
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        with series.lock:
            series.update(conn, running=row["status"] == "running")
            return series.snapshot()
