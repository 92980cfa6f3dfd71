"""Stored runs: `runs`, `show` (also as HTML/PDF files), `export`, `plot` — reports rebuilt
from the database."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
from pathlib import Path

import click

from loadtester import store
from loadtester.analysis.aggregate import merged_seconds, whole_run_histogram
from loadtester.analysis.export import render_hgrm, window_rows, write_rows
from loadtester.analysis.report import render_text, report_from_row, report_needs_windows
from loadtester.cli.options import StoreFailure, db_option, find_run, open_existing, store_errors
from loadtester.store.queries import iter_request_codes
from loadtester.units import format_ms

# Commands here only read: they open the database read-only (no migration, no recovery, no
# write on open: they work on a full disk and in a read-only directory), and show a run whose
# writer is gone as the next writable open will leave it (interrupted, its stored totals).


@click.command()
@db_option
@store_errors
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs(db_path, limit, as_json):
    """History of stored runs, newest first."""
    conn = open_existing(db_path, readonly=True)
    try:
        rows = store.settle_dead_runs(conn, store.list_runs(conn, limit=limit))
    finally:
        conn.close()
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
@store_errors
@click.option("--json", "as_json", is_flag=True)
@click.option("--windows/--no-windows", default=True, help="Include the per-second table.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Write the report serve gives as HTML (one self-contained file) here.")
@click.option("--pdf", "pdf_path", type=click.Path(dir_okay=False),
              help="Write the report serve gives as PDF here.")
def show(run, db_path, as_json, windows, html_path, pdf_path):
    """One run's full report, rebuilt from the database (RUN: id, uuid prefix, last).

    With --html and/or --pdf, writes the same report files `serve` gives (no server needed)
    and prints where (add --json for the JSON report as well)."""
    conn = open_existing(db_path, readonly=True)
    try:
        row, stored_windows, report = _run_report(conn, run, db_path, windows)
        if html_path or pdf_path:
            from loadtester.reports.data import load_report_data
            data = load_report_data(conn, row, db_path)
    finally:
        conn.close()
    if html_path or pdf_path:
        _write_reports(data, html_path, pdf_path)
        if not as_json:
            return
    seconds = merged_seconds(stored_windows) if windows else []
    if as_json:
        report["seconds"] = seconds
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"run {row['id']}  {row['uuid']}  started {row.get('started_at')}  "
               f"status {row.get('status')}")
    click.echo(render_text(report))
    if seconds:
        click.echo(f"\n  {'second':>6} {'requests':>10} {'errors':>7} {'p50':>9} {'p99':>9} "
                   f"{'max':>9}")
        for s in seconds:
            click.echo(f"  {s['second'] + 1:>6} {s['requests']:>10,} {s['errors']:>7,} "
                       f"{format_ms(s['p50_ms']):>9} {format_ms(s['p99_ms']):>9} "
                       f"{format_ms(s['max_ms']):>9}")


@click.command()
@click.argument("run")
@db_option
@store_errors
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "ndjson", "hgrm"]), default="csv",
              show_default=True, help="hgrm: the run's latency percentile spectrum, as HdrHistogram "
                                      "and wrk2 print it (ms), for HdrHistogram's plotters.")
@click.option("--requests", "with_requests", is_flag=True,
              help="Export the request rows instead of the per-second windows.")
@click.option("--variants", "with_variants", is_flag=True,
              help="Export what each request variant of a --data run got (row, request, counts).")
@click.option("--uncorrected", is_flag=True,
              help="With --format hgrm: the service time (from the actual send), not the latency "
                   "corrected for coordinated omission (open loop).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write here instead of stdout (a temporary file beside it, renamed into place).")
def export(run, db_path, fmt, with_requests, with_variants, uncorrected, output):
    """Export a run's per-second windows (or its request rows, or its data variants) as CSV,
    JSON or NDJSON; or its latency distribution as an HdrHistogram .hgrm (--format hgrm)."""
    if with_requests and with_variants:
        raise click.UsageError("give either --requests or --variants, not both")
    if fmt == "hgrm" and (with_requests or with_variants):
        raise click.UsageError("--format hgrm is the run's latency distribution: not with "
                               "--requests or --variants")
    if uncorrected and fmt != "hgrm":
        raise click.UsageError("--uncorrected goes with --format hgrm")
    if fmt == "hgrm":
        _export_hgrm(run, db_path, uncorrected, output)
        return
    conn = open_existing(db_path, readonly=True)
    try:
        row, stored_windows, report = _run_report(conn, run, db_path,
                                                  not (with_requests or with_variants))
        if with_variants:
            if not (report.get("traffic") or {}).get("data"):
                raise click.UsageError(f"run {row['id']} was not run with --data: it has no "
                                       "request variants")
            if not row.get("variant_counts"):
                raise StoreFailure(f"run {row['id']} has no per-variant counts stored ("
                                   + ("it is still running)" if row.get("status") == "running"
                                      else "its parts sent different variants, or it ended "
                                           "before its summary was stored)"))
            columns, rows, fast = store.VARIANT_COLUMNS, store.iter_variant_counts(conn, row["id"]), False
        elif with_requests:
            if row.get("store_mode") in ("windows", "none"):
                raise StoreFailure(f"run {row['id']} was stored with --store {row['store_mode']}: "
                                   "it has no request rows to export")
            columns, rows, fast = store.REQUEST_COLUMNS, store.iter_request_tuples(conn, row["id"]), True
        else:
            if row.get("store_mode") == "none":
                raise StoreFailure(f"run {row['id']} was stored with --store none: it has no "
                                   f"per-second rows to export (its summary: `loadtester show "
                                   f"{row['id']} --json`)")
            (columns, rows), fast = window_rows(stored_windows or []), False
        _write_output(output, lambda out: write_rows(out, columns, rows, fast, fmt, report))
    finally:
        conn.close()


@click.command()
@click.argument("runs", nargs=-1, required=True)
@db_option
@store_errors
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the page here (default: stdout).")
def plot(runs, db_path, output):
    """Plot runs on one self-contained HTML page: latency and throughput over time and the
    latency distribution (percentile curve) of each RUN (id, uuid prefix, last, last~1).
    A run that stored no per-second data (blast --store none) is left out, with a warning;
    when none of them did, nothing is written (exit 1)."""
    from loadtester.reports.plot import render_plot, run_plot_data, without_seconds_line
    conn = open_existing(db_path, readonly=True)
    try:
        rows = store.settle_dead_runs(conn, [find_run(conn, ref) for ref in runs])
        plotted = [(row, run_plot_data(conn, row)) for row in rows]
    finally:
        conn.close()
    empty = [row for row, data in plotted if not data["points"]]
    if len(empty) == len(plotted):
        raise StoreFailure(f"{without_seconds_line(empty)}: nothing to plot")
    if empty:
        click.echo(f"loadtester: warning: {without_seconds_line(empty)}: left out of the plot",
                   err=True)
    page = render_plot([data for _, data in plotted if data["points"]])
    if output:
        if _write_file(Path(output), lambda out: out.write(page)):
            click.echo(f"wrote {output}")
    else:
        click.echo(page, nl=False)


def _write_reports(data, html_path, pdf_path) -> None:
    """The HTML and PDF reports of `data` (reports.data) written to their paths."""
    from loadtester.reports import htmlreport, pdfreport
    if html_path:
        page = htmlreport.render_html(data)
        if _write_file(Path(html_path), lambda out: out.write(page)):
            click.echo(f"wrote {html_path}")
    if pdf_path:
        document = pdfreport.render_pdf(data)
        if _write_file(Path(pdf_path), lambda out: out.write(document), binary=True):
            click.echo(f"wrote {pdf_path}")


def _export_hgrm(ref, db_path, uncorrected: bool, output) -> None:
    """The run's whole-run histogram as .hgrm text; a run that ended before its summary was
    stored (killed) has it merged from its per-second windows."""
    conn = open_existing(db_path, readonly=True)
    try:
        row = store.settle_dead_runs(conn, [find_run(conn, ref)])[0]
        hist = whole_run_histogram(row, lambda: store.run_windows(conn, row["id"]),
                                   uncorrected=uncorrected)
    finally:
        conn.close()
    if not hist.total:
        why = "it is still running" if row.get("status") == "running" else "it got no response"
        raise StoreFailure(f"run {row['id']} has no latency distribution to export ({why})")
    text = render_hgrm(hist)
    _write_output(output, lambda out: out.write(text))


def _write_output(output, write) -> None:
    """write(file) into `output` (_write_file), or onto stdout without one."""
    if output:
        _write_file(Path(output), write)
        return
    try:
        write(sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:                   # `export ... | head`: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _run_report(conn, ref, db_path, with_windows):
    """(the run's row as a writable open would leave it, its windows if read, its report)."""
    row = store.settle_dead_runs(conn, [find_run(conn, ref)])[0]
    stored_windows = (store.run_windows(conn, row["id"])
                      if with_windows or report_needs_windows(row) else None)
    report = report_from_row(row, db_path, stored_windows,
                             request_rows=lambda: iter_request_codes(conn, row["id"]))
    return row, stored_windows, report


def _write_file(output: Path, write, binary: bool = False) -> bool:
    """write(file) into a temporary file next to `output`, renamed over it once complete: a
    failed export (no such directory, a full disk) leaves nothing, and no half file.  False
    when `output` was a device or pipe (/dev/stdout): no "wrote" line may follow into it."""
    if output.is_dir():
        raise StoreFailure(f"cannot write {output}: it is a directory")
    text = {"mode": "w", "newline": "", "encoding": "utf-8", "buffering": 1 << 20}
    if output.exists() and not output.is_file():
        # /dev/stdout, a pipe, a terminal: written to as it is (renaming over it would put a
        # regular file in its place, and the reader would get nothing).
        try:
            with open(output, **({"mode": "wb"} if binary else text)) as out:
                write(out)
        except OSError as exc:
            raise StoreFailure(f"cannot write {output}: {exc.strerror or exc}") from None
        return False
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with open(fd, **({"mode": "wb"} if binary else text)) as out:
            write(out)
        os.replace(tmp, output)
        tmp = None
    except OSError as exc:
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise StoreFailure(f"cannot write {output}: {reason}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
    return True


def register(cli: click.Group) -> None:
    for command in (runs, show, export, plot):
        cli.add_command(command)
