"""`loadtester serve`: the web app and JSON API (loadtester.web), started from the command line."""
from __future__ import annotations

import click

from loadtester.cli.options import db_option
from loadtester.store import StoreError
from loadtester.web.middleware.proxies import DEFAULT_TRUSTED_PROXIES, parse_trusted_proxies
from loadtester.web.ratelimit import RateLimiter
from loadtester.web.server import ServeError, serve_forever


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              envvar="PORT", help="0 picks a free port (printed on the first line). [env: PORT]")
@db_option
@click.option("--allow-private", is_flag=True,
              help="Allow loopback and private targets (local use). Cloud metadata addresses "
                   "stay blocked.")
@click.option("--rate-limit", default="10/min", show_default=True,
              help="Test starts per client address: N/min (a burst of N), N/h, or 0 for none.")
@click.option("--max-per-client", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Running tests per client address.")
@click.option("--max-running", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Running tests in all.")
@click.option("--forwarded-allow-ips", default=DEFAULT_TRUSTED_PROXIES, show_default=True,
              envvar="FORWARDED_ALLOW_IPS",
              help="Proxies (addresses or networks, comma-separated; * for any, '' for none) "
                   "whose X-Forwarded-For / -Proto name the client, as in uvicorn: per-client "
                   "limits then see the client behind an ingress. [env: FORWARDED_ALLOW_IPS]")
def serve_command(host, port, db_path, allow_private, rate_limit, max_per_client, max_running,
                  forwarded_allow_ips):
    """Web UI and JSON API: start, watch, stop and compare runs (stored in the database).

    Set LOADTESTER_TOKEN to require `Authorization: Bearer <token>` on /api/* and /report/*.
    """
    try:
        RateLimiter.parse(rate_limit)                # fail early on a bad value
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--rate-limit'") from None
    try:
        parse_trusted_proxies(forwarded_allow_ips)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--forwarded-allow-ips'") from None
    db_path = db_path.absolute()
    try:
        serve_forever(host=host, port=port, db_path=db_path, allow_private=allow_private,
                      rate_limit=rate_limit, max_per_client=max_per_client,
                      max_running=max_running, forwarded_allow_ips=forwarded_allow_ips,
                      announce=lambda line: print(line, flush=True),
                      warn=lambda line: click.echo(line, err=True))
    except (ServeError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None



def register(cli: click.Group) -> None:
    cli.add_command(serve_command)

