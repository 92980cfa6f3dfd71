"""`loadtester db ...`: backup, restore, check, stats, prune.  Thin: parse, call store, print."""
from __future__ import annotations

import functools
import json
import re

import click

from . import store

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class StoreFailure(click.ClickException):
    """A StoreError, shown as `loadtester: <message>` on stderr; exit status 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"loadtester: {self.format_message()}", err=True)


def store_errors(func):
    """StoreError -> StoreFailure, for commands also run outside main() (CliRunner)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except store.StoreError as exc:
            raise StoreFailure(str(exc)) from exc
    return wrapper


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '45s', '2w' -> seconds; ValueError otherwise."""
    match = _DURATION_RE.match(str(text))
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNIT_S[match.group(2).lower()]


class AgeType(click.ParamType):
    name = "AGE"

    def convert(self, value, param, ctx):
        try:
            return parse_age(value)
        except ValueError:
            self.fail(f"{value!r} is not an age: use a number and a unit, e.g. 30d, 12h, 90m, 45s",
                      param, ctx)


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def _resolve_db(ctx, param, value):
    return store.resolve_db_path(value)


def _db_option(func):
    """--db, passed to the command as `path`: already resolved (store.resolve_db_path)."""
    return click.option("--db", "path", metavar="PATH", default=None, callback=_resolve_db,
                        help=f"database file (default: $DB_PATH, else {store.DEFAULT_DB_PATH})")(func)


def register(cli: click.Group) -> None:
    """Add the `db` command group to the top-level CLI."""

    @cli.group("db")
    def db_group():
        """Look after the database: backup, restore, check, stats, prune."""

    @db_group.command("backup")
    @click.argument("dest", type=click.Path(dir_okay=False))
    @_db_option
    @store_errors
    def backup_cmd(dest, path):
        """Copy the database to DEST, safely while a run writes."""
        result = store.backup(path, dest)
        click.echo(f"backed up {path} to {result['path']}: {_human_bytes(result['bytes'])} "
                   f"in {result['seconds']:.2f} s")

    @db_group.command("restore")
    @click.argument("src", type=click.Path(dir_okay=False))
    @_db_option
    @store_errors
    def restore_cmd(src, path):
        """Replace the database with backup SRC; keeps the old one."""
        kept = store.restore(src, path)
        message = f"restored {src} into {path}"
        if kept is not None:
            message += f"; the previous database is kept as {kept}"
        click.echo(message)

    @db_group.command("check")
    @_db_option
    @click.option("--quick", is_flag=True, help="PRAGMA quick_check: faster, fewer checks.")
    @store_errors
    def check_cmd(path, quick):
        """Check integrity; exit status 1 if anything is wrong."""
        problems = store.check(path, quick=quick)
        if problems == ["ok"]:
            click.echo(f"{path}: ok")
            return
        for problem in problems:
            click.echo(f"{path}: {problem}")
        raise click.exceptions.Exit(1)

    @db_group.command("migrate")
    @_db_option
    @store_errors
    def migrate_cmd(path):
        """Create the database or bring it to this version; runs left 'running' by a
        dead process are marked 'interrupted'."""
        conn = store.open_database(path)
        version = conn.pragma("user_version")
        conn.close()
        click.echo(f"{path}: schema version {version}")

    @db_group.command("stats")
    @_db_option
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @store_errors
    def stats_cmd(path, as_json):
        """Sizes, counts and bytes per stored request row."""
        info = store.stats(path)
        if as_json:
            click.echo(json.dumps(info, indent=2, sort_keys=True))
            return
        per_row = info["bytes_per_request_row"]
        lines = [
            f"database       {info['path']}",
            f"size           {_human_bytes(info['db_bytes'])} (+ wal {_human_bytes(info['wal_bytes'])}, "
            f"shm {_human_bytes(info['shm_bytes'])})",
            f"pages          {info['page_count']:,} x {info['page_size']} B, {info['freelist_pages']:,} free",
            f"schema         {info['schema_version']}",
            f"runs           {info['runs']:,} ({info['running_runs']:,} running)"
            + (f", {_human_bytes(info['bytes_per_run'])} per run on average"
               if info["bytes_per_run"] is not None else ""),
            f"request rows   {info['request_rows']:,}",
            f"window rows    {info['window_rows']:,}",
            f"bytes/request  {per_row if per_row is not None else '-'}"
            + (f" ({info['bytes_per_request_row_source']})" if per_row is not None else ""),
        ]
        click.echo("\n".join(lines))

    @db_group.command("prune")
    @click.option("--older-than", "older_than", type=AgeType(), required=True,
                  help="delete finished runs started longer ago than this (30d, 12h, 90m, 45s)")
    @click.option("--vacuum", is_flag=True, help="then VACUUM to give the space back to the filesystem")
    @_db_option
    @store_errors
    def prune_cmd(older_than, vacuum, path):
        """Delete old runs with their request rows and windows."""
        result = store.prune(path, older_than, vacuum=vacuum)
        click.echo(f"pruned {result['runs_deleted']:,} run(s), {result['rows_deleted']:,} request rows, "
                   f"{result['windows_deleted']:,} windows from {path}"
                   + (f"; vacuumed: {_human_bytes(result['bytes_before'])} -> "
                      f"{_human_bytes(result['bytes_after'])}" if vacuum else ""))
