"""The `data` a run's reports are drawn from (htmlreport.render_html, pdfreport.render_pdf), built
once for both of their callers: `serve` (web/pages, from its series cache) and
`show --html/--pdf` (cli/history, from the database directly), so both give the same report.

    {"uuid", "run_id", "label", "url" (masked when the run asked for it), "method", "status",
     "result", "result_reason" (analysis.verdict), "started_at", "completed_at", "users",
     "duration", "summary" (one line), "report": the report dict (report_from_row, the --json
     output), "seconds": [{"second", "rps", "errors", "success_rate", "p50_ms", "p95_ms",
     "p99_ms", ...}] (analysis.series rows)}
"""
from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

import apsw

from loadtester.analysis.report import report_from_row
from loadtester.analysis.series import Series, SeriesSnapshot
from loadtester.analysis.verdict import judge
from loadtester.reports.display import display_host, display_messages, display_text, display_url, summary_line
from loadtester.units import parse_iso_utc

if TYPE_CHECKING:
    from _typeshed import StrPath

Row = dict[str, Any]


def seconds_since_start(row: Row) -> float:
    """How long the run has been going, by the clock (0 when its start is unknown)."""
    started = parse_iso_utc(row.get("started_at"))
    return max(0.0, (_dt.datetime.now(_dt.UTC) - started).total_seconds()) if started else 0.0


def run_report(row_full: Row, series: SeriesSnapshot, db_path: StrPath | None) -> dict[str, Any]:
    """report_from_row, fed from the windows when the run has no stored summary (yet); without
    the database path or the data file's, and with the URLs (the run's, its targets' and
    journey steps') masked when the run asked for that."""
    row = dict(row_full)
    if row["status"] == "running" or (row.get("latency_hist") is None and series.rows):
        totals = series.totals
        row.update(totals.summary_columns())
        if row["status"] == "running":
            row["measured_duration"] = seconds_since_start(row)
        elif not row.get("measured_duration"):
            row["measured_duration"] = float(len(series.rows))
    report = report_from_row(row, db_path)
    report.pop("db", None)
    data = (report.get("traffic") or {}).get("data")
    if data:
        data.pop("path", None)     # where the data file was on the machine that ran it: its name
    if row.get("mask_host"):
        traffic = report.get("traffic")
        if traffic and traffic.get("journey"):
            traffic["journey"] = [f"{method} {display_url(url, True)}" for method, url in
                                  (step.split(" ", 1) for step in traffic["journey"])]
        report["url"] = display_url(report.get("url"), True)
        for target in report.get("targets") or []:
            target["url"] = display_url(target.get("url"), True)
        report["error_messages"] = display_messages(report.get("error_messages") or {},
                                                    row.get("host"), True)
        report.pop("resolve", None)              # the address it was pinned to (--resolve)
        if report.get("worker_errors"):
            report["worker_errors"] = [display_text(death, row.get("host"), True)
                                       for death in report["worker_errors"]]
    return report


def report_data(row_full: Row, series: SeriesSnapshot, db_path: StrPath | None,
                error_line: str | None = None) -> dict[str, Any]:
    """The reports' `data` for the run `row_full` (every test_runs column) and its series.
    error_line: why the run failed, when its process said so (serve's runs)."""
    report = run_report(row_full, series, db_path)
    masked = bool(row_full.get("mask_host"))
    host = display_host(row_full.get("host"), masked)
    verdict = judge(row_full, report["successes"], error_line)
    avg_ms = (report.get("latency_ms") or {}).get("avg")
    summary = summary_line(host, row_full.get("total_users"), row_full.get("duration"),
                           report["success_rate"] if report["attempts"] else None,
                           report["rps"], avg_ms, running=row_full["status"] == "running",
                           requests=row_full.get("requests_limit"))
    return {"uuid": row_full["uuid"], "run_id": row_full["id"], "label": row_full.get("label"),
            "url": display_url(row_full.get("url"), masked),
            "method": row_full.get("method"), "status": row_full["status"],
            "result": verdict.result,
            "result_reason": display_text(verdict.reason, row_full.get("host"), masked),
            "started_at": row_full.get("started_at"), "completed_at": row_full.get("completed_at"),
            "users": row_full.get("total_users"), "duration": row_full.get("duration"),
            "summary": summary, "report": report, "seconds": series.rows}


def stored_series(conn: apsw.Connection, row: Row) -> SeriesSnapshot:
    """The run's per-second series, read from its stored windows (no cache)."""
    series = Series(row["id"], row.get("workers") or 1)
    series.update(conn, running=row["status"] == "running")
    return series.snapshot()


def load_report_data(conn: apsw.Connection, row_full: Row, db_path: StrPath | None) -> dict[str, Any]:
    """report_data of a stored run, read through `conn`."""
    return report_data(row_full, stored_series(conn, row_full), db_path)
