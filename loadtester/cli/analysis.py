"""`loadtester compare` and `loadtester merge`.  Thin: parse, call the library, print.

Wired into the top-level CLI by `analysis_cli.register(cli)`."""
from __future__ import annotations

import json

import click

from loadtester.analysis import compare as compare_mod, merge as merge_mod
from loadtester.cli.options import db_option, find_run, open_existing, store_errors
from loadtester.units import format_ms


@click.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@store_errors
def compare_cmd(run_a, run_b, db_path, as_json):
    """Compare run B with run A (the baseline): rps, latency, errors and a verdict.

    RUN is an id, a uuid prefix, 'last' or 'last~1' (the one before last).  The verdict
    (regression / improvement / no significant change) comes from the runs' per-second
    windows: a Mann-Whitney U test at p < 0.01 and a median shift of more than 5%."""
    conn = open_existing(db_path, readonly=True)
    try:
        row_a = find_run(conn, run_a)
        row_b = find_run(conn, run_b)
        result = compare_mod.compare_runs(conn, row_a, row_b)
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(compare_mod.render(result))


@click.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--into", "into", required=True, metavar="DEST.db", type=click.Path(dir_okay=False),
              help="Database to write the merged runs to (created if needed; not a source).")
@click.option("--group", default=None, metavar="G",
              help="Merge only this run group (--run-id of the shards) or, with --by-label, label.")
@click.option("--by-label", is_flag=True,
              help="Also merge runs that are not shards (no --run-id) but share a label.")
@click.option("--json", "as_json", is_flag=True, help="Print what was merged as JSON.")
@store_errors
def merge_cmd(sources, into, group, by_label, as_json):
    """Merge the shards of a run, stored in several databases, into one run in DEST.db.

    The shards of a run share its run group (blast --shard i/n --run-id ID); other runs are
    left alone, and listed with the reason, unless --by-label merges the runs that share a
    label.  Counts are added and histograms merged exactly."""
    result = merge_mod.merge(list(sources), into, group=group, by_label=by_label)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        if not result["merged"] and not result["skipped"] and not result["ignored"]:
            click.echo(f"nothing to merge: no run in {', '.join(sources)}")
        for m in result["merged"]:
            if m["already_merged"]:
                click.echo(f"group {m['group']!r}: already merged as run {m['run_id']} "
                           f"({m['uuid']}) in {result['into']}")
                continue
            shards = ", ".join(f"{p['db']}#{p['run_id']}" + (f" [{p['shard']}]" if p.get("shard") else "")
                               for p in m["parts"])
            click.echo(f"group {m['group']!r}: {len(m['parts'])} run(s) -> run {m['run_id']} "
                       f"({m['uuid']}) in {result['into']}, {m['status']}")
            click.echo(f"  {m['requests']:,} requests, {m['rps']:,.1f} req/s, "
                       f"p50 {format_ms(m['p50'])}, p99 {format_ms(m['p99'])}; "
                       f"{m['request_rows']:,} request rows, {m['windows']:,} windows")
            click.echo(f"  from {shards}")
            for note in m["notes"]:
                click.echo(f"  note: {note}")
        for s in result["skipped"]:
            click.echo(f"group {s['group']!r}: skipped: {s['reason']}", err=True)
        for r in result["ignored"]:
            click.echo(f"loadtester: skipped run {r['run_id']} in {r['db']}: {r['reason']}", err=True)
    if (result["skipped"] or result["ignored"]) and not result["merged"]:
        raise click.exceptions.Exit(1)


def register(cli: click.Group) -> None:
    """Add `compare` and `merge` to the top-level CLI."""
    for command in (compare_cmd, merge_cmd):
        cli.add_command(command)
