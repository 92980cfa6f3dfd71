"""The command line: parses, calls the library, prints. Nothing else lives here."""
from __future__ import annotations

import importlib
import json
import re
import sys

import click

from loadtester import __version__
from loadtester.spec import SpecError, build_spec, parse_duration_s
from loadtester.store import StoreError


class DurationType(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        try:
            return parse_duration_s(value)
        except SpecError as exc:
            self.fail(str(exc), param, ctx)


class LazyCommands(click.Group):
    """`serve` (starlette, uvicorn) and `compare`/`merge` (statistics, PDF) are
    imported the first time one of them is asked for: every other command, and
    each blast `serve` starts, begins in half the time."""

    lazy_modules = {"serve": "loadtester.serve", "compare": "loadtester.analysis_cli",
                    "merge": "loadtester.analysis_cli"}

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


@cli.command()
@click.argument("urls", nargs=-1, metavar="URL...")
@click.option("--targets", "targets_file",
              help="Targets file (vegeta format): 'METHOD URL', header lines, '@body-file'.")
@click.option("-c", "--connections", type=int, default=50, show_default=True,
              help="Concurrent connections.")
@click.option("-d", "--duration", help="Run time: 500ms, 10s, 2m (default 10s).")
@click.option("-n", "--requests", type=int, help="Send exactly this many requests, then stop.")
@click.option("-m", "--method", default="GET", show_default=True)
@click.option("-H", "--header", "headers", multiple=True, help="'Name: value', repeatable.")
@click.option("--body", help="Request body.")
@click.option("--body-file", help="Read the request body from this file.")
@click.option("--timeout", help="Per-request timeout (default 10s).")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
@click.option("--rate", help="Open loop: requests per second across all connections.")
@click.option("--ramp-up", help="Grow connections (or the rate) linearly over this time.")
@click.option("--workers", default="1", show_default=True,
              help="Worker processes, or 'auto' for one per core.")
@click.option("--label", default="", help="A name to find this run by later.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--db", help="Database file (default: $DB_PATH or ./data/loadtest.db).")
@click.option("--store", "store_mode", type=click.Choice(["requests", "windows", "none"]),
              default="requests", show_default=True,
              help="Keep every request row, only per-second windows, or only the summary.")
@click.option("--progress/--no-progress", default=None,
              help="Live progress line once a second (default: on when stderr is a TTY).")
@click.option("--threshold", "thresholds", multiple=True,
              help="Pass/fail rule, repeatable: 'p99<200ms', 'errors<1%', 'rps>1000'. "
                   "Exit 1 when one fails.")
@click.option("--abort-on-error-rate", help="Stop early once this share of requests failed: 50%.")
@click.option("--shard", help="i/n: run shard i of n (its share of connections and rate).")
@click.option("--run-id", default="", help="Name shared by the shards of one run (for merge).")
@click.option("--uuid", "run_uuid", hidden=True, help="Store the run under this uuid (serve).")
@click.option("--mask-host", is_flag=True, help="Show this run's host masked in the web UI.")
def blast(urls, targets_file, connections, duration, requests, method, headers, body, body_file,
          timeout, insecure, rate, ramp_up, workers, label, as_json, db, store_mode, progress,
          thresholds, abort_on_error_rate, shard, run_id, run_uuid, mask_host):
    """Send load to URL (several URLs, or --targets FILE, are taken in turn) and report
    throughput and latency.

    Exit codes: 0 done (and every --threshold passed), 1 a threshold failed, the
    run was aborted by --abort-on-error-rate or failed, 2 bad usage.
    """
    from loadtester import blast as blast_mod, thresholds as thresholds_mod
    try:
        spec = build_spec(urls[0] if urls else None, more_urls=urls[1:],
                          targets_file=targets_file, connections=connections,
                          duration=duration, requests=requests, method=method, headers=headers,
                          body=body, body_file=body_file, timeout=timeout, insecure=insecure,
                          rate=rate, ramp_up=ramp_up, workers=workers, label=label,
                          shard=shard, run_id=run_id)
        rules = [thresholds_mod.parse_threshold(text) for text in thresholds]
        abort_rate = parse_share(abort_on_error_rate) if abort_on_error_rate else None
    except (SpecError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if progress is None:
        progress = sys.stderr.isatty() and not as_json
    if run_uuid is not None and not re.fullmatch(r"[0-9a-f-]{36}", run_uuid):
        raise click.UsageError(f"invalid --uuid {run_uuid!r}")
    report = blast_mod.blast(spec, db=db, store_mode=store_mode, progress=progress,
                             thresholds=rules, abort_error_rate=abort_rate, run_uuid=run_uuid,
                             mask_host=mask_host)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        from loadtester.report import render_text
        click.echo(render_text(report))
    if (report["status"] == "failed" or report["stop_reason"] == "aborted"
            or not thresholds_mod.all_passed(report.get("thresholds", []))):
        raise SystemExit(1)


def parse_share(text: str) -> float:
    """'50%' or '0.5' -> 0.5."""
    value = text.strip()
    try:
        share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise SpecError(f"invalid error rate {text!r}: use a percentage such as 50%") from None
    if not 0 < share <= 1:
        raise SpecError(f"invalid error rate {text!r}: must be above 0% and at most 100%")
    return share


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True, help="0 picks a free port.")
@click.option("--delay", type=DurationType(), default="0", help="Delay every response: 50ms.")
@click.option("--status", type=click.IntRange(100, 599), default=200, show_default=True)
@click.option("--body-size", type=click.IntRange(0, 64 << 20), default=13, show_default=True)
@click.option("--lifetime", type=DurationType(), default=None,
              help="Stop by itself after this long.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="Private key for --tls-cert (PEM).")
def target(host, port, delay, status, body_size, lifetime, tls_cert, tls_key):
    """A fast local HTTP server to aim at: counts what it serves.

    GET /__loadtester/stats returns {"served": N}; /__loadtester/pause?ms=N
    stalls every response for N ms from now.
    """
    import ssl

    from loadtester import target as target_mod
    try:
        target_mod.run(host=host, port=port, delay_s=delay, status=status,
                       body_size=body_size, lifetime_s=lifetime, tls_cert=tls_cert,
                       tls_key=tls_key)
    except ssl.SSLError as exc:
        raise click.ClickException(f"cannot use the TLS certificate: {exc.reason}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              envvar="PORT", help="Port `loadtester serve` listens on. [env: PORT]")
@click.option("--timeout", type=DurationType(), default="4s", show_default=True)
def healthcheck(port, timeout):
    """Exit 0 when `loadtester serve` on this machine answers /healthz (container health)."""
    import urllib.error
    import urllib.request
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read() or b"{}")
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"unhealthy: {url}: {getattr(exc, 'reason', exc)}") from None
    if body.get("status") != "ok":
        raise click.ClickException(f"unhealthy: {url} answered {body}")
    click.echo(f"healthy: {url}")


def _register_commands():
    from loadtester import dbcli, history
    dbcli.register(cli)
    history.register(cli)


def main(argv=None):
    _register_commands()
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
        raise SystemExit(130) from None
    except StoreError as exc:
        click.echo(f"loadtester: {exc}", err=True)
        raise SystemExit(1) from None
    raise SystemExit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
