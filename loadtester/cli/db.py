"""`loadtester db ...`: backup, restore, check, stats, prune.  Thin: parse, call store, print."""
from __future__ import annotations

import json
import sys

import click

from loadtester import store
from loadtester.cli.options import AgeType, StoreFailure, UsageFailure, db_option, store_errors
from loadtester.units import format_bytes

PRUNE_ASKS_BELOW_S = 3600       # a younger age may take runs just made: asked, or --yes


def register(cli: click.Group) -> None:
    """Add the `db` command group to the top-level CLI."""

    @cli.group("db")
    def db_group():
        """Look after the database: backup, restore, check, stats, prune."""

    def db_command(name: str):
        """A `db` subcommand: with --db, and store errors as one line (exit 1)."""
        def decorate(func):
            return db_group.command(name)(db_option(store_errors(func)))
        return decorate

    @db_command("backup")
    @click.argument("dest", type=click.Path(dir_okay=False))
    def backup_cmd(dest, db_path):
        """Copy the database to DEST, safely while a run writes."""
        result = store.backup(db_path, dest)
        click.echo(f"backed up {db_path} to {result['path']}: {format_bytes(result['bytes'])} "
                   f"in {result['seconds']:.2f} s")

    @db_command("restore")
    @click.argument("src", type=click.Path(dir_okay=False))
    def restore_cmd(src, db_path):
        """Replace the database with backup SRC; keeps the old one."""
        kept = store.restore(src, db_path)
        message = f"restored {src} into {db_path}"
        if kept is not None:
            message += f"; the previous database is kept as {kept}"
        click.echo(message)

    @db_command("check")
    @click.option("--quick", is_flag=True, help="PRAGMA quick_check: faster, fewer checks.")
    def check_cmd(db_path, quick):
        """Check integrity; exit status 1 if anything is wrong."""
        problems = store.check(db_path, quick=quick)
        if problems == ["ok"]:
            click.echo(f"{db_path}: ok")
            return
        for problem in problems:
            click.echo(f"{db_path}: {problem}")
        raise click.exceptions.Exit(1)

    @db_command("migrate")
    def migrate_cmd(db_path):
        """Create the database or bring it to this version; runs left 'running' by a
        dead process are marked 'interrupted'."""
        conn = store.open_database(db_path)
        version = conn.pragma("user_version")
        conn.close()
        click.echo(f"{db_path}: schema version {version}")

    @db_command("stats")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    def stats_cmd(db_path, as_json):
        """Sizes, counts and bytes per stored request row."""
        info = store.stats(db_path)
        if as_json:
            click.echo(json.dumps(info, indent=2, sort_keys=True))
            return
        per_row = info["bytes_per_request_row"]
        lines = [
            f"database       {info['path']}",
            f"size           {format_bytes(info['db_bytes'])} (+ wal {format_bytes(info['wal_bytes'])}, "
            f"shm {format_bytes(info['shm_bytes'])})",
            f"pages          {info['page_count']:,} x {info['page_size']} B, {info['freelist_pages']:,} free",
            f"schema         {info['schema_version']}",
            f"runs           {info['runs']:,} ({info['running_runs']:,} running)"
            + (f", {format_bytes(info['bytes_per_run'])} per run on average"
               if info["bytes_per_run"] is not None else ""),
            f"request rows   {info['request_rows']:,}",
            f"window rows    {info['window_rows']:,}",
            f"bytes/request  {per_row if per_row is not None else '-'}"
            + (f" ({info['bytes_per_request_row_source']})" if per_row is not None else ""),
        ]
        click.echo("\n".join(lines))

    @db_command("prune")
    @click.option("--older-than", "older_than", type=AgeType(), required=True,
                  help="delete finished runs started longer ago than this (30d, 12h, 90m, 45s)")
    @click.option("--vacuum", is_flag=True, help="then VACUUM to give the space back to the filesystem")
    @click.option("--yes", "-y", "yes", is_flag=True,
                  help="do not ask (an age under an hour asks on a terminal, and needs --yes otherwise)")
    def prune_cmd(older_than, vacuum, yes, db_path):
        """Delete old runs with their request rows and windows."""
        if older_than < PRUNE_ASKS_BELOW_S and not yes:
            _confirm_prune(db_path, older_than)
        result = store.prune(db_path, older_than, vacuum=vacuum)
        click.echo(f"pruned {result['runs_deleted']:,} run(s), {result['rows_deleted']:,} request rows, "
                   f"{result['windows_deleted']:,} windows from {db_path}"
                   + (f"; vacuumed: {format_bytes(result['bytes_before'])} -> "
                      f"{format_bytes(result['bytes_after'])}" if vacuum else ""))


def _confirm_prune(db_path, older_than: float) -> None:
    """Ask before a prune that may take runs just made: on a terminal; elsewhere --yes."""
    preview = store.prune_preview(db_path, older_than)
    if not preview["runs"]:
        return
    what = (f"--older-than {older_than:g}s deletes {preview['runs']:,} of the "
            f"{preview['of']:,} runs in {db_path}")
    if not sys.stdin.isatty():
        raise UsageFailure(f"{what}; add --yes to confirm")
    if not click.confirm(f"{what}, with their rows. Delete them?", default=False, err=True):
        raise StoreFailure("prune cancelled; nothing deleted")
