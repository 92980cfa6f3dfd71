"""What every command shares: the one --db option, parameter types, exit codes, and the
translation of store errors into `loadtester: <one line>` with exit status 1."""
from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable
from typing import Any, TypeVar

import apsw
import click

from loadtester import store
from loadtester.units import UnitError, parse_duration_s

EXIT_OK = 0
EXIT_FAILED = 1          # the run failed, a threshold failed, or storage failed
EXIT_USAGE = 2           # click's convention for bad usage
EXIT_INTERRUPTED = 130   # Ctrl-C at a prompt

F = TypeVar("F", bound=Callable[..., Any])


class StoreFailure(click.ClickException):
    """A StoreError, shown as `loadtester: <message>` on stderr; exit status 1."""

    exit_code = EXIT_FAILED

    def show(self, file: Any = None) -> None:
        click.echo(f"loadtester: {self.format_message()}", err=True)


class UsageFailure(click.UsageError):
    """Bad usage found after parsing: `loadtester: error: <message>` (one line) on stderr;
    exit status 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"loadtester: error: {self.format_message()}", err=True)


def store_errors(func: F) -> F:
    """StoreError -> StoreFailure, for commands also run outside main() (CliRunner)."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except store.StoreError as exc:
            raise StoreFailure(str(exc)) from exc
    return wrapper  # type: ignore[return-value]


def _resolve_db(ctx: click.Context, param: click.Parameter, value: str | None) -> pathlib.Path:
    return store.resolve_db_path(value)


def db_option(func: F) -> F:
    """--db, passed to the command as `db_path`: already resolved (store.resolve_db_path)."""
    return click.option("--db", "db_path", metavar="PATH", default=None, callback=_resolve_db,
                        help=f"Database file (default: $DB_PATH, else {store.DEFAULT_DB_PATH}).")(func)


def open_existing(path: pathlib.Path, *, readonly: bool = False) -> apsw.Connection:
    """The database at path, which must exist (StoreFailure otherwise)."""
    if not path.exists():
        raise StoreFailure(f"no database at {path}: run `loadtester blast` first")
    try:
        return store.open_database(path, readonly=readonly, create=False)
    except store.StoreError as exc:
        raise StoreFailure(str(exc)) from None


def find_run(conn: apsw.Connection, ref: str) -> dict[str, Any]:
    """A run by id, uuid prefix, 'last' or 'last~N' (StoreFailure when there is none)."""
    try:
        row = store.find_run(conn, ref)
    except store.StoreError as exc:
        raise StoreFailure(str(exc)) from None
    if row is None:
        raise StoreFailure(f"no run {ref!r} (use an id, a uuid prefix, 'last' or 'last~1')")
    return row


class DurationType(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return parse_duration_s(value)
        except UnitError as exc:
            self.fail(str(exc), param, ctx)


class AgeType(click.ParamType):
    name = "AGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return parse_duration_s(value, "age", unit_required=True)
        except UnitError:
            self.fail(f"{value!r} is not an age: use a number and a unit, e.g. 30d, 12h, 90m, 45s",
                      param, ctx)
