"""What the JSON API answers, built from the database: the status, metrics, timeseries,
running, history, compare and report payloads, and the health check.

Everything comes from the database - the test_runs row and its per-second metric_windows rows,
read through read-only connections opened per request (ServeContext.reader) - never from the
blast's pipes; a run this server started that has not stored its row yet is described from its
RunProcess.  These functions block: the endpoints run them in Starlette's thread pool."""
from __future__ import annotations

import io
import time
import urllib.parse
from typing import Any

import apsw

from loadtester import store
from loadtester.analysis import aggregate, export as export_mod
from loadtester.analysis.report import traffic_summary
from loadtester.analysis.series import SeriesSnapshot
from loadtester.analysis.verdict import CIRCUIT_BREAKER_STOP, judge, stored_json
from loadtester.reports import data as reports_data
from loadtester.reports.display import display_host, display_messages, display_text, display_url, summary_line
from loadtester.store import queries
from loadtester.units import parse_iso_utc
from loadtester.web import pipeops
from loadtester.web.context import ServeContext
from loadtester.web.errors import ApiError
from loadtester.web.runs import RunProcess

Row = dict[str, Any]

# A run in one of these states has no final summary to trust (yet): its numbers come from
# its per-second windows.
FROM_WINDOWS = ("running", "interrupted", "failed")

RUNNING_KEYS = ("uuid", "id", "url", "label", "users", "duration", "elapsed_s", "remaining_s",
                "progress", "status", "result", "started_at")


# --------------------------------------------------------------------------- payload builders

def elapsed_s(row: Row | None, run: RunProcess | None) -> float:
    """Seconds the run has been going (running) or went (finished)."""
    if row is None:
        if run is None:
            return 0.0
        end = run.ended_mono if run.ended_mono is not None else time.monotonic()
        return max(0.0, end - run.started_mono)
    if row["status"] == "running":
        return reports_data.seconds_since_start(row)
    if row.get("measured_duration") is not None:
        return float(row["measured_duration"])
    started, ended = parse_iso_utc(row.get("started_at")), parse_iso_utc(row.get("completed_at"))
    return max(0.0, (ended - started).total_seconds()) if started and ended else 0.0


def live_numbers(row: Row, series: SeriesSnapshot | None, elapsed: float) -> dict[str, Any]:
    """success_rate, rps, avg_ms: stored for finished runs, from the windows otherwise."""
    if row["status"] not in FROM_WINDOWS or series is None:
        total = row.get("total_requests") or 0
        return {"success_rate": (row.get("success_count") or 0) / total if total else None,
                "rps": row.get("rps"), "avg_ms": row.get("avg_latency"),
                "p99_ms": row.get("p99")}
    totals = series.totals
    if row.get("avg_latency") is not None and row["status"] != "running":
        avg, p99 = row.get("avg_latency"), row.get("p99")
    else:
        avg = totals.latency.mean_us / 1000 if totals.latency.total else None
        p99 = totals.latency.value_at_percentile(99) / 1000 if totals.latency.total else None
    seconds = max(elapsed, float(len(series.rows))) if row["status"] == "running" \
        else (row.get("measured_duration") or float(len(series.rows)) or elapsed)
    responses = totals.counters.responses
    return {"success_rate": totals.counters.successes / totals.requests if totals.requests else None,
            "rps": row["rps"] if row.get("rps") is not None and row["status"] != "running"
            else (responses / seconds if seconds else None),
            "avg_ms": avg, "p99_ms": p99}


def successes_of(row: Row, series: SeriesSnapshot | None) -> int | None:
    """The run's successful responses: stored, else what its windows add up to."""
    if row.get("success_count") is not None and row["status"] not in FROM_WINDOWS:
        return int(row["success_count"])
    if series is not None and series.rows:
        return int(series.totals.counters.successes)
    return row.get("success_count")


def errors_of(row: Row, series: SeriesSnapshot | None) -> int | None:
    """The run's failed attempts: stored, else what its windows add up to."""
    if row.get("error_count") is not None and row["status"] not in FROM_WINDOWS:
        return int(row["error_count"])
    if series is not None and series.rows:
        return int(series.totals.requests - series.totals.counters.successes)
    return row.get("error_count")


def verdict_fields(row: Row, run: RunProcess | None, successes: int | None) -> dict[str, Any]:
    """result (verdict.judge), result_reason, thresholds (pass/fail; while running, the ones
    asked for, unjudged), error_messages (kind -> first message), stopped_by_circuit and
    abort_on_error_rate (known for runs this server started).  `row`: the summary columns
    (queries.WEB_RUN_COLUMNS, the verdict's included) or the whole row."""
    verdict = judge(row, successes, run.error_line() if run is not None else None)
    masked, host = bool(row.get("mask_host")), row.get("host")
    thresholds = stored_json(row.get("thresholds"), [])
    if not thresholds and run is not None and row.get("status") == "running":
        thresholds = [{"expression": t, "passed": None} for t in run.params.thresholds]
    fields: dict[str, Any] = {
        "result": verdict.result, "result_reason": display_text(verdict.reason, host, masked),
        "thresholds": thresholds,
        "error_messages": display_messages(stored_json(row.get("error_messages"), {}), host,
                                           masked),
        "stopped_by_circuit": row.get("stop_reason") == CIRCUIT_BREAKER_STOP,
        "abort_on_error_rate": run.params.abort_on_error_rate if run is not None else None,
    }
    deaths = stored_json(row.get("worker_errors"), [])
    if deaths:
        fields["worker_errors"] = [display_text(death, host, masked) for death in deaths]
    return fields


def pending_status(run: RunProcess) -> dict[str, Any]:
    """The status of a run started here that has not stored its row (yet)."""
    elapsed = elapsed_s(None, run)
    p = run.params
    status = "running" if run.alive else "failed"
    payload = {
        "uuid": run.uuid, "id": None, "status": status,
        "url": display_url(p.url, p.mask_host), "label": p.label or None,
        "method": p.method, "users": p.users, "duration": p.duration_s,
        "ramp_up": p.ramp_up_s, "rate": p.rate, "mask_host": p.mask_host,
        "elapsed_s": round(elapsed, 3), "remaining_s": round(max(0.0, p.duration_s - elapsed), 3)
        if status == "running" else 0.0,
        "progress": 0.0, "started_at": run.started_at, "completed_at": None,
        "summary": summary_line(display_host(p.host, p.mask_host), p.users,
                                p.duration_s, None, None, None, running=status == "running"),
        "stop_reason": None,
        "settings": settings_of({"status": status, "mode": "rate" if p.rate else "closed",
                                 "rate": p.rate, "total_users": p.users, "ramp_up_sec": p.ramp_up_s,
                                 "method": p.method, "duration": p.duration_s,
                                 "started_at": run.started_at},
                              {"insecure": p.insecure}, elapsed),
    }
    payload.update(verdict_fields({"status": status}, run, 0))
    if status == "failed":
        payload["error"] = run.error_line()
    return payload


def settings_of(row: Row, config: object, elapsed: float | None = None) -> dict[str, Any]:
    """What a run was asked to do and how it ended, for the run page's settings panel and
    compare's settings diff: mode (closed / rate), rate, connections, ramp-up, method,
    planned vs actual duration, request limit, timeout, insecure (TLS certificates not
    verified: the CLI's --insecure), pipeline depth, the body's size and sha256, stop reason, times,
    and the traffic that was sent (traffic_settings).
    `config`: its stored config column (JSON text or parsed); `elapsed`: while it runs."""
    spec = stored_json(config, {})
    actual = row.get("measured_duration")
    if actual is None and row.get("status") == "running":
        actual = elapsed
    return {
        "mode": row.get("mode") or spec.get("mode") or "closed", "rate": row.get("rate") or None,
        "connections": row.get("total_users"), "ramp_up_s": row.get("ramp_up_sec") or 0,
        "method": row.get("method") or spec.get("method") or "GET",
        "planned_duration_s": row.get("duration"),
        "actual_duration_s": round(actual, 3) if actual is not None else None,
        "requests_limit": row.get("requests_limit"), "timeout_s": spec.get("timeout_s"),
        "insecure": bool(spec.get("insecure")),
        "pipeline": spec.get("pipeline") or 1, "workers": row.get("workers") or spec.get("workers"),
        "body": body_setting(spec),
        "stop_reason": row.get("stop_reason"), "started_at": row.get("started_at"),
        "completed_at": row.get("completed_at"),
        "traffic": traffic_settings(spec.get("traffic"), spec.get("targets") or [],
                                    bool(row.get("mask_host"))),
    }


def body_setting(config: dict[str, Any]) -> str | None:
    """'123 B, sha256 0123456789ab' (a run keeps no body, only these: spec.config), None for
    a run without one."""
    size = config.get("body_bytes") or 0
    if not size:
        return None
    digest = config.get("body_sha256")
    return f"{size:,} B" + (f", sha256 {digest[:12]}" if digest else "")


# What the settings show of a run's data file: not its path on the machine that ran it.
DATA_SETTINGS = ("file", "rows", "sha256", "order", "seed", "per_connection", "variants")


def traffic_settings(traffic: dict[str, Any] | None, targets: list[dict[str, Any]],
                     masked: bool) -> dict[str, Any] | None:
    """What shaped the requests (issue 15), None for a plain run: `summary` (the CLI's few
    words), `data` (file name, rows, sha256, order, seed, one row per connection), `weights`
    ([{target, weight}] in the targets' order), `journey` (its steps in order), `think_ms`
    ([low, high]) and `seed`; URLs as shown (masked when the run asked for that)."""
    if not traffic:
        return None

    def shown(method: str, url: str) -> str:
        return f"{method} {display_url(url, masked)}"

    data, weights, journey = traffic.get("data"), traffic.get("weights"), traffic.get("journey")
    return {
        "summary": traffic_summary(traffic),
        "data": {key: data.get(key) for key in DATA_SETTINGS} if data else None,
        "weights": ([{"target": shown(t["method"], t["url"]), "weight": weight}
                     for t, weight in zip(targets, weights)] if weights else None),
        "journey": [shown(*step.split(" ", 1)) for step in journey] if journey else None,
        "think_ms": traffic.get("think_ms"), "seed": traffic.get("seed"),
    }


def run_progress(row: Row, series: SeriesSnapshot | None, elapsed: float) -> float:
    """How far the run is, 0..1: by the clock for a duration (-d), by attempts for a count
    (-n)."""
    duration, limit = row.get("duration"), row.get("requests_limit")
    if duration:
        return min(1.0, elapsed / duration)
    if limit:
        if series is not None and series.rows:
            attempts = series.totals.requests
        else:
            attempts = row.get("total_requests") or 0           # (attempts, errors included)
        return min(1.0, attempts / limit)
    return 0.0


def status_payload(row: Row | None, run: RunProcess | None,
                   series: SeriesSnapshot | None) -> dict[str, Any]:
    """GET /api/status: from the stored row (and its windows), else from the RunProcess."""
    if row is None:
        assert run is not None, "a run is stored or was started here"
        return pending_status(run)
    elapsed = elapsed_s(row, run)
    masked = bool(row.get("mask_host"))
    host = display_host(row.get("host"), masked)
    duration = row.get("duration")
    status = row["status"]
    if status == "running":
        remaining = max(0.0, (duration or 0) - elapsed)
        progress = run_progress(row, series, elapsed)
    else:
        remaining = 0.0
        progress = 1.0 if status == "completed" else run_progress(row, series, elapsed)
    numbers = live_numbers(row, series, elapsed)
    payload = {
        "uuid": row["uuid"], "id": row["id"], "status": status,
        "url": display_url(row.get("url"), masked), "label": row.get("label"),
        "method": row.get("method"), "users": row.get("total_users"), "duration": duration,
        "ramp_up": row.get("ramp_up_sec") or None, "rate": row.get("rate"), "mask_host": masked,
        "elapsed_s": round(elapsed, 3), "remaining_s": round(remaining, 3),
        "progress": round(progress, 4), "started_at": row.get("started_at"),
        "completed_at": row.get("completed_at"),
        "summary": summary_line(host, row.get("total_users"), duration, numbers["success_rate"],
                                numbers["rps"], numbers["avg_ms"], running=status == "running",
                                requests=row.get("requests_limit")),
        "stop_reason": row.get("stop_reason"),
        "settings": settings_of(row, row.get("config"), elapsed),
        **verdict_fields(row, run, successes_of(row, series)),
    }
    if run is not None and run.stop_requested and status == "running":
        payload["stopping"] = True
    return payload


def history_entry(row: Row, series: SeriesSnapshot | None) -> dict[str, Any]:
    """One run of GET /api/history."""
    numbers = live_numbers(row, series, elapsed_s(row, None))
    masked = bool(row.get("mask_host"))
    host = display_host(row.get("host"), masked)
    return {
        "uuid": row["uuid"], "id": row["id"], "label": row.get("label"),
        "url": display_url(row.get("url"), masked),
        "method": row.get("method"), "users": row.get("total_users"),
        "duration": row.get("duration"), "status": row["status"],
        "started_at": row.get("started_at"), "completed_at": row.get("completed_at"),
        "total_requests": row.get("total_requests"),
        "errors": errors_of(row, series), "mode": row.get("mode") or "closed",
        "rate": row.get("rate") or None, "measured_duration": row.get("measured_duration"),
        "rps_last_second": series.closed[-1]["rps"]
        if row["status"] == "running" and series is not None and series.closed else None,
        "rps": numbers["rps"], "p99_ms": numbers["p99_ms"],
        "success_rate": numbers["success_rate"], "avg_latency_ms": numbers["avg_ms"],
        "summary": summary_line(host, row.get("total_users"), row.get("duration"),
                                numbers["success_rate"], numbers["rps"],
                                numbers["avg_ms"], running=row["status"] == "running",
                                requests=row.get("requests_limit")),
        **{k: v for k, v in verdict_fields(row, None, successes_of(row, series)).items()
           if k in ("result", "result_reason", "thresholds", "error_messages",
                    "stopped_by_circuit")},
    }


def run_report(ctx: ServeContext, row_full: Row, series: SeriesSnapshot) -> dict[str, Any]:
    """reports.data.run_report of this server's database."""
    return reports_data.run_report(row_full, series, ctx.db_path)


# --------------------------------------------------------------------------- endpoint bodies
# (each opens its own read-only connection; they run in Starlette's thread pool)

def lookup(ctx: ServeContext, conn: apsw.Connection, run_uuid: str,
           full: bool = False) -> tuple[Row | None, RunProcess | None]:
    """(stored row or None, RunProcess or None); 404 when neither exists.  full: every
    column (else the summary columns)."""
    row = queries.run_by_uuid(conn, run_uuid) if full else queries.run_summary(conn, run_uuid)
    run = ctx.manager.get(run_uuid) if run_uuid not in ctx.deleted else None
    if row is None and run is None:
        raise ApiError(404, f"no run {run_uuid}")
    return row, run


def status(ctx: ServeContext, run_uuid: str) -> dict[str, Any]:
    with ctx.reader() as conn:
        row, run = lookup(ctx, conn, run_uuid)
        series = ctx.cache.get(conn, row) if row is not None and row["status"] in FROM_WINDOWS \
            else None
        payload = status_payload(row, run, series)
        payload["previous_uuid"] = (queries.previous_run_uuid(conn, row["id"], row.get("url"))
                                    if row is not None else None)
        return payload


def metrics(ctx: ServeContext, run_uuid: str) -> dict[str, Any]:
    with ctx.reader() as conn:
        row, run = lookup(ctx, conn, run_uuid, full=True)
        if row is None:
            payload = status_payload(None, run, None)
            pending = {"uuid": run_uuid, "status": payload["status"], "live": True,
                       "requests": 0, "requests_so_far": 0, "rps_last_second": None,
                       "elapsed_s": payload["elapsed_s"], "seconds_recorded": 0,
                       "error": payload.get("error"),
                       **{k: payload[k] for k in VERDICT_KEYS if k in payload}}
            return {**pipeops.flat_metrics(pending, None, payload["duration"]), **pending}
        series = ctx.cache.get(conn, row)
        report = run_report(ctx, row, series)
        report.update(verdict_fields(row, run, successes_of(row, series)))
        rows = series.rows
        report["live"] = row["status"] == "running"
        report["elapsed_s"] = round(elapsed_s(row, run), 3)
        report["seconds_recorded"] = len(rows)
        if report["live"]:
            closed = series.closed
            last = closed[-1] if closed else {}
            report["requests_so_far"] = series.totals.requests
            report["errors_so_far"] = series.totals.requests - series.totals.counters.successes
            report["rps_last_second"] = last.get("rps")
            report["errors_last_second"] = last.get("errors")
            report["p95_last_second_ms"] = last.get("p95_ms")
            report["p99_last_second_ms"] = last.get("p99_ms")
        duration = report["elapsed_s"] if report["live"] else row.get("duration")
        p95 = p95_ms(row, series)
        if isinstance(report.get("latency_ms"), dict):
            report["latency_ms"]["p95"] = p95
        report["latency_distribution"] = aggregate.percentile_curve(latency_hist(row, series))
        flat = pipeops.flat_metrics(report, p95, duration)
        return {**flat, **report}


VERDICT_KEYS = ("result", "result_reason", "thresholds", "error_messages", "stopped_by_circuit",
                "abort_on_error_rate")


def latency_hist(row: Row, series: SeriesSnapshot) -> Any:
    """The run's (corrected) latency histogram: stored, else merged from its windows."""
    if row.get("latency_hist") is not None and row["status"] != "running":
        return aggregate.hist_from_blob(row["latency_hist"])
    return series.totals.latency


def p95_ms(row: Row, series: SeriesSnapshot) -> float | None:
    """The run's p95 latency (the summary columns have none)."""
    hist = latency_hist(row, series)
    return hist.value_at_percentile(95) / 1000 if hist.total else None


def series_rows(ctx: ServeContext, run_uuid: str) -> tuple[Row | None, list[Row]]:
    """(the run's summary row or None while it is not stored, its per-second rows)."""
    with ctx.reader() as conn:
        row, _run = lookup(ctx, conn, run_uuid)
        if row is None:
            return None, []
        return row, ctx.cache.get(conn, row).rows


def timeseries(ctx: ServeContext, run_uuid: str) -> dict[str, Any]:
    row, rows = series_rows(ctx, run_uuid)
    if row is None:
        return {"uuid": run_uuid, "seconds": []}
    return {"uuid": run_uuid, "status": row["status"], "seconds": rows}


def pipeops_timeseries(ctx: ServeContext, run_uuid: str) -> list[dict[str, Any]]:
    """GET /api/timeseries?format=pipeops: the original's list of points."""
    row, rows = series_rows(ctx, run_uuid)
    return pipeops.timeseries_points(rows, row.get("started_at") if row else None)


def historical_metrics(ctx: ServeContext, run_uuid: str) -> dict[str, Any]:
    """GET /api/historical-metrics: the original's flat totals and time series."""
    state = status(ctx, run_uuid)
    flat = metrics(ctx, run_uuid)
    _row, rows = series_rows(ctx, run_uuid)
    host = urllib.parse.urlsplit(state["url"]).hostname if state.get("url") else None
    return pipeops.historical_metrics(flat, state, rows, host)


def running(ctx: ServeContext) -> list[dict[str, Any]]:
    with ctx.reader() as conn:
        rows = queries.running_runs(conn)
        stored = {row["uuid"] for row in rows}
        # runs started here that have not stored their row yet (a finished run's process
        # may outlive its row's final status by a moment: those are not running)
        pending = [r for r in ctx.manager.active()
                   if r.uuid not in stored and queries.run_summary(conn, r.uuid) is None]
        closed = {row["uuid"]: ctx.cache.get(conn, row).closed for row in rows}
    payloads = [status_payload(row, ctx.manager.get(row["uuid"]), None) for row in rows]
    payloads += [pending_status(run) for run in pending]
    return [{**{k: p[k] for k in RUNNING_KEYS},
             "rps_last_second": closed[p["uuid"]][-1]["rps"] if closed.get(p["uuid"]) else None}
            for p in payloads]


def history(ctx: ServeContext, page: int, per_page: int, search: str | None = None,
            order: str = "newest") -> dict[str, Any]:
    with ctx.reader() as conn:
        total = queries.count_runs(conn, search)
        runs = []
        for row in queries.runs_page(conn, limit=per_page, offset=(page - 1) * per_page,
                                     search=search, order=order):
            series = ctx.cache.get(conn, row) if row["status"] in FROM_WINDOWS else None
            runs.append(history_entry(row, series))
    return {"runs": runs, "page": page, "per_page": per_page, "total": total,
            "search": search or "", "sort": order}


def compare(ctx: ServeContext, a: str, b: str) -> dict[str, Any]:
    from loadtester.analysis import compare as compare_mod
    with ctx.reader() as conn:
        rows = []
        for ref in (a, b):
            row = queries.run_by_uuid(conn, ref)
            if row is None:
                raise ApiError(404, f"no run {ref}")
            rows.append(row)
        result = compare_mod.compare_runs(conn, rows[0], rows[1])
        for key, row in zip(("a", "b"), rows):
            series = ctx.cache.get(conn, row) if row["status"] in FROM_WINDOWS else None
            verdict = verdict_fields(row, ctx.manager.get(row["uuid"]), successes_of(row, series))
            result[key]["result"] = verdict["result"]
            result[key]["result_reason"] = verdict["result_reason"]
    for key, row in zip(("a", "b"), rows):
        if row.get("mask_host"):
            result[key]["url"] = display_url(result[key].get("url"), True)
    result["settings"] = settings_diff(rows[0], rows[1], result["a"]["url"], result["b"]["url"])
    return result


SETTING_NAMES = (("url", "Target"), ("method", "Method"), ("mode", "Load model"),
                 ("rate", "Rate (req/s)"), ("connections", "Connections"),
                 ("ramp_up_s", "Ramp-up (s)"), ("planned_duration_s", "Planned duration (s)"),
                 ("actual_duration_s", "Actual duration (s)"), ("stop_reason", "Stop reason"),
                 ("timeout_s", "Timeout (s)"), ("pipeline", "Pipeline depth"),
                 ("body", "Request body"),
                 ("insecure", "TLS verification skipped"), ("traffic", "Traffic"))


def settings_diff(row_a: Row, row_b: Row, url_a: str | None,
                  url_b: str | None) -> list[dict[str, Any]]:
    """[{key, name, a, b, differs}]: the two runs' settings side by side (URLs as shown)."""
    a = {**settings_of(row_a, row_a.get("config")), "url": url_a}
    b = {**settings_of(row_b, row_b.get("config")), "url": url_b}
    return [{"key": key, "name": name, "a": a.get(key), "b": b.get(key),
             "differs": as_compared(key, a.get(key)) != as_compared(key, b.get(key))}
            for key, name in SETTING_NAMES]


def as_compared(key: str, value: Any) -> Any:
    """A setting as the compare page shows it (seconds to a tenth), so that two cells that
    read the same are never marked different."""
    if key.endswith("_s") and isinstance(value, (int, float)):
        return round(float(value), 1)
    return value


def export(ctx: ServeContext, run_uuid: str, fmt: str) -> str:
    """GET /api/export: the run's per-second rows as `loadtester export --format fmt` writes
    them (the rows of a run of at most an hour: built in memory), or its .hgrm."""
    with ctx.reader() as conn:
        row, _run = lookup(ctx, conn, run_uuid, full=True)
        if row is None:
            raise ApiError(409, f"run {run_uuid} has not stored anything yet")
        if fmt == "hgrm":                  # the latency spectrum, as `export --format hgrm`
            hist = aggregate.whole_run_histogram(row, lambda: queries.run_windows(conn, row["id"]))
            if not hist.total:
                raise ApiError(409, f"run {run_uuid} has no latency distribution to export "
                                    "(no response yet)")
            return export_mod.render_hgrm(hist)
        report = run_report(ctx, row, ctx.cache.get(conn, row))
        columns, rows = export_mod.window_rows(queries.run_windows(conn, row["id"]))
    out = io.StringIO()
    export_mod.write_rows(out, columns, rows, False, fmt, report)
    return out.getvalue()


def delete(ctx: ServeContext, run_uuid: str) -> None:
    """DELETE /api/runs: the finished run and its rows; 404 unknown, 409 running."""
    with ctx.reader() as conn:
        row, run = lookup(ctx, conn, run_uuid)
    if (row is not None and row["status"] == "running") or (run is not None and run.alive):
        raise ApiError(409, f"run {run_uuid} is running: stop it first")
    try:
        found = store.delete_run(ctx.db_path, run_uuid)
    except store.StoreError as exc:
        raise ApiError(409 if "running" in str(exc) else 503, str(exc)) from None
    if not found and run is None:
        raise ApiError(404, f"no run {run_uuid}")
    if run is not None:                  # (the manager forgets old runs: so does this set)
        ctx.deleted.add(run_uuid)


def report_data(ctx: ServeContext, run_uuid: str) -> dict[str, Any]:
    """The `data` the reports take (reports.data.report_data), from the series cache."""
    with ctx.reader() as conn:
        row, run = lookup(ctx, conn, run_uuid, full=True)
        if row is None:
            raise ApiError(409, f"run {run_uuid} has not stored anything yet")
        series = ctx.cache.get(conn, row)
    return reports_data.report_data(row, series, ctx.db_path,
                                    run.error_line() if run is not None else None)


def stream_poll(ctx: ServeContext, run_uuid: str,
                since: int) -> tuple[dict[str, Any], list[Row]]:
    """(status, the closed seconds after `since`) for GET /api/stream."""
    with ctx.reader() as conn:
        row, run = lookup(ctx, conn, run_uuid)
        if row is None:
            return status_payload(None, run, None), []
        series = ctx.cache.get(conn, row)
        state = status_payload(row, run, series)
        rows = series.closed if row["status"] == "running" else series.rows
        return state, [r for r in rows if r["second"] > since]


def health(ctx: ServeContext) -> None:
    """Raises when the database cannot be opened and read."""
    conn = store.open_database(ctx.db_path, readonly=True, create=False)
    try:
        queries.count_runs(conn)
    finally:
        conn.close()
