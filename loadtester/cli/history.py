"""Stored runs: `runs`, `show`, `export` — reports rebuilt from the database."""
from __future__ import annotations

import csv
import json
import sys

import click

from loadtester import store
from loadtester.analysis.aggregate import merged_seconds
from loadtester.analysis.report import render_text, report_from_row, report_needs_windows
from loadtester.cli.options import db_option, find_run, open_existing, store_errors
from loadtester.units import format_ms


@click.command()
@db_option
@store_errors
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs(db_path, limit, as_json):
    """History of stored runs, newest first."""
    conn = open_existing(db_path)
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
@store_errors
@click.option("--json", "as_json", is_flag=True)
@click.option("--windows/--no-windows", default=True, help="Include the per-second table.")
def show(run, db_path, as_json, windows):
    """One run's full report, rebuilt from the database (RUN: id, uuid prefix, last)."""
    conn = open_existing(db_path)
    row = find_run(conn, run)
    stored_windows = (store.run_windows(conn, row["id"])
                      if windows or report_needs_windows(row) else None)
    report = report_from_row(row, db_path, stored_windows)
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
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "ndjson"]), default="csv",
              show_default=True)
@click.option("--requests", "with_requests", is_flag=True,
              help="Export the request rows instead of the per-second windows.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write here instead of stdout.")
def export(run, db_path, fmt, with_requests, output):
    """Export a run's per-second windows (or its request rows) as CSV, JSON or NDJSON."""
    conn = open_existing(db_path)
    row = find_run(conn, run)
    stored_windows = (store.run_windows(conn, row["id"])
                      if not with_requests or report_needs_windows(row) else None)
    if with_requests:
        rows = store.iter_requests(conn, row["id"])
    else:
        rows = iter(merged_seconds(stored_windows))
    out = open(output, "w", newline="") if output else sys.stdout
    try:
        _write_rows(out, rows, fmt, report_from_row(row, db_path, stored_windows))
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
