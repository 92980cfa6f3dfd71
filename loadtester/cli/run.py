"""`loadtester blast`, `target` and `healthcheck`: parse, call the library, print."""
from __future__ import annotations

import json
import re
import signal
import sys

import click

from loadtester.analysis.report import render_text
from loadtester.analysis.thresholds import all_passed, parse_threshold
from loadtester.analysis.verdict import judge
from loadtester.cli.options import EXIT_FAILED, DurationType, db_option
from loadtester.model import SpecError
from loadtester.run.blast import blast as run_blast
from loadtester.run.runner import RunRefused, preflight
from loadtester.spec import build_spec


@click.command()
@click.argument("urls", nargs=-1, metavar="URL...")
@click.option("--targets", "targets_file",
              help="Targets file (vegeta format): 'METHOD URL', header lines, '@body-file'; "
                   "'weight: N' gives a target N turns in every round.")
@click.option("-c", "--connections", type=int, default=50, show_default=True,
              help="Concurrent connections.")
@click.option("-d", "--duration", help="Run time: 500ms, 10s, 2m (default 10s).")
@click.option("-n", "--requests", type=int, help="Send exactly this many requests, then stop.")
@click.option("-m", "--method", default="GET", show_default=True)
@click.option("-H", "--header", "headers", multiple=True, help="'Name: value', repeatable.")
@click.option("--headers-file",
              help="More headers, one 'Name: value' a line (keeps secrets such as an "
                   "Authorization header off the command line, where `ps` shows them).")
@click.option("--resolve", "pins", multiple=True, metavar="HOST:PORT:ADDRESS[,ADDRESS...]",
              help="Connect to ADDRESS (an IP; IPv6 in brackets) for HOST:PORT, without DNS, "
                   "as curl's --resolve; with several, connections take them in turn. The "
                   "Host header, TLS SNI and the certificate check keep HOST. Repeatable.")
@click.option("--body", help="Request body.")
@click.option("--body-file", help="Read the request body from this file.")
@click.option("--timeout", help="Per-request timeout (default 10s).")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
@click.option("--rate", help="Open loop: requests per second across all connections "
                             "(with --journey: journeys started per second).")
@click.option("--ramp-up", help="Grow connections (or the rate) linearly over this time.")
@click.option("--pipeline", type=int, default=1, show_default=True,
              help="HTTP/1.1 pipelining: write N requests at once on each connection, then "
                   "wait for their N responses (1 to 256; closed loop only).")
@click.option("--workers", default="1", show_default=True,
              help="Worker processes, or 'auto' for one per core.")
@click.option("--label", default="", help="A name to find this run by later.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@db_option
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
# --- realistic traffic (issue 15): data rows, weights (targets file), journeys, think time
@click.option("--data", "data_file", help="CSV (header row) or NDJSON rows that fill "
              "{{column}} in the URL, header values and body: one request per row.")
@click.option("--data-order", type=click.Choice(["sequential", "random"]),
              help="Order the rows are sent in (default sequential; random is a shuffle, "
                   "repeatable with --seed).")
@click.option("--seed", type=click.IntRange(0, (1 << 63) - 1),
              help="Seed for --data-order random, {{uuid}} and --think.")
@click.option("--data-max-mb", type=float, default=256, show_default=True,
              help="Refuse data whose request variants need more memory than this.")
@click.option("--data-per-connection", is_flag=True,
              help="Pin row i to connection i (one user's identity per connection).")
@click.option("--journey", "journey_file",
              help="Targets file of steps each connection walks in order, again and again.")
@click.option("--think", help="Closed loop: wait between a connection's requests: 200ms, "
                              "or 100ms-500ms (uniform).")
@click.option("--uuid", "run_uuid", hidden=True, help="Store the run under this uuid (serve).")
@click.option("--mask-host", is_flag=True, help="Show this run's host masked in the web UI.")
def blast(urls, targets_file, connections, duration, requests, method, headers, body, body_file,
          timeout, insecure, rate, ramp_up, pipeline, workers, label, as_json, db_path, store_mode,
          progress, thresholds, abort_on_error_rate, shard, run_id, data_file, data_order, seed,
          data_max_mb, data_per_connection, journey_file, think, run_uuid, mask_host,
          headers_file, pins):
    """Send load to URL (several URLs, or --targets FILE, are taken in turn) and report
    throughput and latency.

    Exit codes: 0 done (and every --threshold passed); 1 a threshold failed, the run was
    aborted by --abort-on-error-rate, failed, or got no response at all; 2 bad usage;
    130 / 143 stopped by SIGINT / SIGTERM (the report is still printed and stored).
    """
    try:
        spec = build_spec(urls[0] if urls else None, more_urls=urls[1:],
                          targets_file=targets_file, connections=connections,
                          duration=duration, requests=requests, method=method, headers=headers,
                          body=body, body_file=body_file, timeout=timeout, insecure=insecure,
                          rate=rate, ramp_up=ramp_up, workers=workers, label=label,
                          shard=shard, run_id=run_id, pipeline=pipeline,
                          headers_file=headers_file, resolve=pins,
                          **traffic_options(data_file, data_order, seed, data_max_mb,
                                            data_per_connection, journey_file, think))
        rules = [parse_threshold(text) for text in thresholds]
        abort_rate = parse_share(abort_on_error_rate) if abort_on_error_rate else None
    except (SpecError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if progress is None:
        progress = sys.stderr.isatty() and not as_json
    if run_uuid is not None and not re.fullmatch(r"[0-9a-f-]{36}", run_uuid):
        raise click.UsageError(f"invalid --uuid {run_uuid!r}")
    try:
        for warning in preflight(spec):
            click.echo(f"loadtester: warning: {warning}", err=True)
    except RunRefused as exc:
        raise click.ClickException(str(exc)) from None
    report = run_blast(spec, db=db_path, store_mode=store_mode, progress=progress,
                             thresholds=rules, abort_error_rate=abort_rate, run_uuid=run_uuid,
                             mask_host=mask_host)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_text(report))
    raise SystemExit(exit_code(report))


def traffic_options(data_file, data_order, seed, data_max_mb, data_per_connection,
                    journey_file, think) -> dict:
    """build_spec's realistic-traffic arguments from blast's options."""
    return {"data": data_file, "data_order": data_order, "seed": seed,
            "data_max_mb": data_max_mb, "data_per_connection": data_per_connection,
            "journey": journey_file, "think": think}


def exit_code(report: dict) -> int:
    """What the shell sees; a run that got nothing back, or nothing but errors, never looks
    like a success."""
    signal_name = report.get("stop_signal")
    if signal_name:
        return 128 + signal.Signals[signal_name].value         # 130 SIGINT, 143 SIGTERM
    if report["requests"] == 0 and report["attempts"]:
        kinds = ", ".join(f"{kind} {count:,}" for kind, count in report["errors_by_kind"].items())
        first = next(iter(report.get("error_messages", {}).values()), "")
        click.echo(f"loadtester: no response at all: {kinds}" + (f" ({first})" if first else ""),
                   err=True)
        return EXIT_FAILED
    if report["successes"] == 0 and report["attempts"]:
        # Every response an error (a 404 for a mistyped path, a 503): the web app and the
        # reports call this run failed, and so does the shell.
        click.echo(f"loadtester: {judge(report, 0).reason}", err=True)
        return EXIT_FAILED
    if (report["status"] == "failed" or report["stop_reason"] == "aborted"
            or not all_passed(report.get("thresholds", []))):
        return EXIT_FAILED
    return 0



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



@click.command()
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
@click.option("--count-paths", is_flag=True,
              help="Count what each path was served: GET /__loadtester/paths (slower).")
def target(host, port, delay, status, body_size, lifetime, tls_cert, tls_key, count_paths):
    """A fast local HTTP server to aim at: counts what it serves.

    GET /__loadtester/stats returns {"served": N}; /__loadtester/pause?ms=N
    stalls every response for N ms from now; with --count-paths, /__loadtester/paths
    returns {path: times served}.
    """
    import ssl

    from loadtester import localtarget
    if lifetime is not None and lifetime <= 0:
        raise click.BadParameter("must be more than 0 (leave it out to serve until stopped)",
                                 param_hint="'--lifetime'")
    if tls_key and not tls_cert:
        raise click.BadParameter("needs --tls-cert (the certificate it belongs to)",
                                 param_hint="'--tls-key'")
    try:
        localtarget.run(host=host, port=port, delay_s=delay, status=status,
                       body_size=body_size, lifetime_s=lifetime, tls_cert=tls_cert,
                       tls_key=tls_key, count_paths=count_paths)
    except ssl.SSLError as exc:
        detail = ("the key does not match the certificate" if exc.reason == "KEY_VALUES_MISMATCH"
                  else exc.reason or "no PEM certificate and private key could be read from "
                  + (f"{tls_cert} and {tls_key}" if tls_key else
                     f"{tls_cert} (without --tls-key the key must be in the same file)"))
        raise click.BadParameter(detail, param_hint="'--tls-cert'") from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None



@click.command()
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



def register(cli: click.Group) -> None:
    for command in (blast, target, healthcheck):
        cli.add_command(command)
