"""The command line: parses, calls the library, prints.  Nothing else lives here.

One module per command family: run (blast, target, healthcheck), history (runs, show, export),
db (backup, restore, check, stats, prune, migrate), analysis (compare, merge), serve; shared
options and exit codes in options."""
from __future__ import annotations

import importlib

import click

from loadtester import __version__
from loadtester.cli.options import EXIT_FAILED, EXIT_INTERRUPTED
from loadtester.store import StoreError


class LazyCommands(click.Group):
    """`serve` (starlette, uvicorn) and `compare`/`merge` (statistics, PDF) are
    imported the first time one of them is asked for: every other command, and
    each blast `serve` starts, begins in half the time."""

    lazy_modules = {"serve": "loadtester.cli.serve", "compare": "loadtester.cli.analysis",
                    "merge": "loadtester.cli.analysis"}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_modules))

    def get_command(self, ctx, name):
        if name not in self.commands and name in self.lazy_modules:
            importlib.import_module(self.lazy_modules[name]).register(self)
        return super().get_command(ctx, name)


@click.group(cls=LazyCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loadtester")
def cli():
    """HTTP load generator that remembers every run (SQLite).

    Exit codes: 0 done, 1 run or storage failure, 2 bad usage.
    """


def main(argv=None):
    from loadtester.cli import db, history, run
    for family in (run, history, db):
        family.register(cli)
    try:
        result = cli.main(args=argv, prog_name="loadtester", standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"loadtester: error: {exc.format_message()}", err=True)
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        click.echo(f"loadtester: {exc.format_message()}", err=True)
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        click.echo("loadtester: aborted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except StoreError as exc:
        click.echo(f"loadtester: {exc}", err=True)
        raise SystemExit(EXIT_FAILED) from None
    raise SystemExit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
