"""Stored runs: `runs`, `show`, `export` — reports rebuilt from the database."""
from __future__ import annotations

import csv
import json
import sys

import click

from loadtester import _engine, report as report_mod, store

ERROR_INDEX = {name: i for i, name in enumerate(_engine.ERROR_NAMES)}


def counters_from_row(row: dict, max_wait_us: int = 0) -> _engine.Counters:
    """A run's summary columns as Counters (max_wait_us: the schedule lag to carry, in µs)."""
    status = {int(k): v for k, v in json.loads(row.get("status_codes") or "{}").items()}
    by_kind = json.loads(row.get("errors_by_kind") or "{}")
    errors = [0] * len(_engine.ERROR_NAMES)
    for kind, count in by_kind.items():
        if kind in ERROR_INDEX:
            errors[ERROR_INDEX[kind]] = count
    return _engine.Counters.from_dict({
        "responses": sum(status.values()), "successes": row.get("success_count") or 0,
        "bytes": row.get("bytes") or 0, "errors": errors, "status": status,
        "max_wait_us": max_wait_us})


def hist_from_blob(blob) -> _engine.Histogram:
    """A stored histogram blob (or NULL: empty) as a Histogram."""
    return _engine.Histogram.from_bytes(bytes(blob)) if blob else _engine.Histogram()


def totals_from_windows(windows: list[dict]):
    """(Counters, latency Histogram, service Histogram) of a run, added up from its windows
    (store.run_windows); for a run that never wrote its summary columns."""
    counters, latency, service = _engine.Counters(), _engine.Histogram(), _engine.Histogram()
    for window in windows:
        counters.merge(_engine.Counters.from_dict(window["counters"]))
        latency.merge(hist_from_blob(window.get("latency")))
        service.merge(hist_from_blob(window.get("service")))
    return counters, latency, service


def report_needs_windows(row: dict) -> bool:
    """Whether report_from_row reads the run's windows: to rebuild a run without a summary,
    or for the generator's lags when the row has no stored `generator` (which wins)."""
    return row.get("latency_hist") is None or not row.get("generator")


def report_from_row(row: dict, db_path, windows: list[dict] | None = None) -> dict:
    """The same report `blast` printed, rebuilt from what was stored.

    With the run's `windows` (store.run_windows) the generator's lags come back too,
    and a run that never finished (interrupted: no summary was written) is rebuilt
    from the windows it had committed."""
    config = json.loads(row.get("config") or "{}")
    config.setdefault("url", row.get("url"))
    config.setdefault("method", row.get("method") or "GET")
    config.setdefault("mode", row.get("mode") or "closed")
    config.setdefault("connections", row.get("total_users"))
    config.setdefault("workers", row.get("workers") or 1)
    # A stored `generator` replaces the report's below: the windows' lags only matter without one.
    lags_from_windows = bool(windows) and not row.get("generator")
    loop_lag_us = max((w.get("loop_lag_us") or 0) for w in windows) if lags_from_windows else 0
    if windows and row.get("latency_hist") is None:
        counters, latency, service = totals_from_windows(windows)
        duration_s = len({w["second"] for w in windows})
    else:
        max_wait_us = (max((w["counters"]["max_wait_us"] for w in windows), default=0)
                       if lags_from_windows else 0)
        counters = counters_from_row(row, max_wait_us=max_wait_us)
        latency = hist_from_blob(row.get("latency_hist"))
        service = hist_from_blob(row.get("service_hist"))
        duration_s = row.get("measured_duration") or 0.0
    report = report_mod.summarize(
        spec_config=config, counters=counters, latency=latency, service=service,
        duration_s=duration_s, stop_reason=row.get("stop_reason") or row.get("status"),
        status=row.get("status"), dropped_records=row.get("dropped_records") or 0,
        max_loop_lag_us=loop_lag_us, run_id=row["id"], uuid=row["uuid"], db_path=db_path,
        started_at=row.get("started_at"))
    for key in ("generator", "targets", "thresholds"):
        if row.get(key):
            report[key] = json.loads(row[key])
    return report


def merged_seconds(windows: list[dict], percentiles=(50, 99), detail: bool = False) -> list[dict]:
    """Per-second rows, the workers' windows added up (histograms merged exactly), with one
    p<N>_ms key per percentile asked for (p50_ms and p99_ms by default; 99.9 -> p999_ms).
    detail=True adds "responses" (requests - transport errors, as counters["responses"]) and
    "latency" (the second's merged Histogram)."""
    by_second: dict[int, list] = {}
    for window in windows:
        by_second.setdefault(window["second"], []).append(window)
    rows = []
    for second in sorted(by_second):
        parts = by_second[second]
        latency = _engine.Histogram()
        for part in parts:
            latency.merge(hist_from_blob(part.get("latency_hist")))
        requests = sum(p["requests"] or 0 for p in parts)
        row = {
            "second": second, "requests": requests,
            "successes": sum(p["successes"] or 0 for p in parts),
            # window requests = responses + transport errors, like test_runs.total_requests
            "errors": requests - sum(p["successes"] or 0 for p in parts),
            "bytes": sum(p["bytes"] or 0 for p in parts),
            **{f"{report_mod.percentile_key(p)}_ms": latency.value_at_percentile(p) / 1000
               if latency.total else None for p in percentiles},
            "max_ms": latency.max_us / 1000 if latency.total else None,
            "loop_lag_ms": max((p.get("loop_lag_us") or 0) for p in parts) / 1000,
        }
        if detail:
            row["responses"] = requests - sum(p.get("errors") or 0 for p in parts)
            row["latency"] = latency
        rows.append(row)
    return rows


def _open_for_reading(db):
    path = store.resolve_db_path(db)
    if not path.exists():
        raise click.ClickException(f"no database at {path}: run `loadtester blast` first")
    try:
        return path, store.open_database(path)
    except store.StoreError as exc:
        raise click.ClickException(str(exc)) from None


def _find(conn, ref):
    row = store.find_run(conn, ref)
    if row is None:
        raise click.ClickException(f"no run {ref!r} (use an id, a uuid prefix or 'last')")
    return row


db_option = click.option("--db", help="Database file (default: $DB_PATH or ./data/loadtest.db).")


@click.command()
@db_option
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs(db, limit, as_json):
    """History of stored runs, newest first."""
    _, conn = _open_for_reading(db)
    rows = store.list_runs(conn, limit=limit)
    if as_json:
        keep = ("id", "uuid", "started_at", "completed_at", "label", "url", "method",
                "total_users", "duration", "requests_limit", "mode", "rate", "workers", "rps",
                "p50", "p99", "total_requests", "success_count", "error_count", "status")
        click.echo(json.dumps([{k: r.get(k) for k in keep} for r in rows], indent=2))
        return
    if not rows:
        click.echo("no runs stored yet")
        return
    header = f"{'id':>5}  {'started (UTC)':<19}  {'label':<12} {'url':<32} {'conns':>5} " \
             f"{'length':>7} {'rps':>10} {'p99':>9} {'success':>8}  status"
    click.echo(header)
    for r in rows:
        total = r.get("total_requests") or 0
        success = f"{100 * (r.get('success_count') or 0) / total:.1f}%" if total else "-"
        length = f"{r['duration']:g}s" if r.get("duration") else f"n={r.get('requests_limit')}"
        p99 = f"{r['p99']:.2f}ms" if r.get("p99") is not None else "-"
        rps = f"{r['rps']:,.1f}" if r.get("rps") is not None else "-"
        click.echo(f"{r['id']:>5}  {(r.get('started_at') or '')[:19]:<19}  "
                   f"{(r.get('label') or '')[:12]:<12} {(r.get('url') or '')[:32]:<32} "
                   f"{r.get('total_users') or 0:>5} {length:>7} {rps:>10} {p99:>9} "
                   f"{success:>8}  {r.get('status')}")


@click.command()
@click.argument("run")
@db_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--windows/--no-windows", default=True, help="Include the per-second table.")
def show(run, db, as_json, windows):
    """One run's full report, rebuilt from the database (RUN: id, uuid prefix, last)."""
    path, conn = _open_for_reading(db)
    row = _find(conn, run)
    stored_windows = (store.run_windows(conn, row["id"])
                      if windows or report_needs_windows(row) else None)
    report = report_from_row(row, path, stored_windows)
    seconds = merged_seconds(stored_windows) if windows else []
    if as_json:
        report["seconds"] = seconds
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"run {row['id']}  {row['uuid']}  started {row.get('started_at')}  "
               f"status {row.get('status')}")
    click.echo(report_mod.render_text(report))
    if seconds:
        click.echo(f"\n  {'second':>6} {'requests':>10} {'errors':>7} {'p50':>9} {'p99':>9} "
                   f"{'max':>9}")
        for s in seconds:
            click.echo(f"  {s['second'] + 1:>6} {s['requests']:>10,} {s['errors']:>7,} "
                       f"{report_mod.format_ms(s['p50_ms']):>9} {report_mod.format_ms(s['p99_ms']):>9} "
                       f"{report_mod.format_ms(s['max_ms']):>9}")


@click.command()
@click.argument("run")
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "ndjson"]), default="csv",
              show_default=True)
@click.option("--requests", "with_requests", is_flag=True,
              help="Export the request rows instead of the per-second windows.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write here instead of stdout.")
def export(run, db, fmt, with_requests, output):
    """Export a run's per-second windows (or its request rows) as CSV, JSON or NDJSON."""
    path, conn = _open_for_reading(db)
    row = _find(conn, run)
    stored_windows = (store.run_windows(conn, row["id"])
                      if not with_requests or report_needs_windows(row) else None)
    if with_requests:
        rows = store.iter_requests(conn, row["id"])
    else:
        rows = iter(merged_seconds(stored_windows))
    out = open(output, "w", newline="") if output else sys.stdout
    try:
        _write_rows(out, rows, fmt, report_from_row(row, path, stored_windows))
    finally:
        if output:
            out.close()


def _write_rows(out, rows, fmt, report):
    first = next(rows, None)
    if fmt == "json":
        items = [] if first is None else [first, *rows]
        json.dump({"run": report, "rows": items}, out, indent=2)
        out.write("\n")
        return
    if first is None:
        return
    if fmt == "ndjson":
        for item in _chain(first, rows):
            out.write(json.dumps(item) + "\n")
        return
    writer = csv.DictWriter(out, fieldnames=list(first))
    writer.writeheader()
    for item in _chain(first, rows):
        writer.writerow(item)


def _chain(first, rest):
    yield first
    yield from rest


def register(cli: click.Group) -> None:
    for command in (runs, show, export):
        cli.add_command(command)
