"""serve_forever(): `loadtester serve` without the command line - logging, the listening
socket, uvicorn, and stopping the blasts on SIGTERM/SIGINT."""
from __future__ import annotations

import ipaddress
import os
import pathlib
import socket
from collections.abc import Callable
from types import FrameType

from loadtester import store
from loadtester.web.context import ServeContext
from loadtester.web.logs import log_event, setup_logging
from loadtester.web.middleware.proxies import DEFAULT_TRUSTED_PROXIES, parse_trusted_proxies
from loadtester.web.ratelimit import RateLimiter
from loadtester.web.runs import SHUTDOWN_WAIT_S


class ServeError(Exception):
    """The server cannot start; the message is one line."""


def is_loopback_bind(host: str) -> bool:
    """Whether listening on `host` is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposed_warning(shown_host: str) -> str:
    """The one line `serve` prints when anyone who reaches the port may start tests."""
    return (f"loadtester: warning: listening on {shown_host}, not only on loopback, without "
            "LOADTESTER_TOKEN: anyone who can reach this port can start load tests from this "
            "machine; set LOADTESTER_TOKEN")


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one); ServeError when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def serve_forever(*, host: str, port: int, db_path: pathlib.Path, allow_private: bool,
                  rate_limit: str = "10/min", max_per_client: int = 3, max_running: int = 10,
                  forwarded_allow_ips: str = DEFAULT_TRUSTED_PROXIES,
                  announce: Callable[[str], object] = print,
                  warn: Callable[[str], object] = print) -> None:
    import uvicorn

    from loadtester.web.app import create_app  # starlette: only once serving

    setup_logging()
    # Open once: creates/migrates the file and marks runs left 'running' by a dead writer
    # (e.g. a server killed with -9) as 'interrupted'.
    store.open_database(db_path).close()
    token = os.environ.get("LOADTESTER_TOKEN") or None
    ctx = ServeContext(db_path=db_path, allow_private=allow_private, token=token,
                       limiter=RateLimiter.parse(rate_limit), max_per_client=max_per_client,
                       max_running=max_running, loopback_only_hosts=is_loopback_bind(host),
                       trusted_proxies=parse_trusted_proxies(forwarded_allow_ips))
    app = create_app(ctx)

    sock = listen(host, port)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]

    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="on",
                            access_log=False, log_config=None,
                            proxy_headers=False,         # the app applies them (trust_proxies)
                            server_header=False, timeout_graceful_shutdown=int(SHUTDOWN_WAIT_S),
                            timeout_keep_alive=5)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not self.should_exit:
                ctx.manager.stop_all()               # blasts start stopping at once
            super().handle_exit(sig, frame)

    server = _Server(config)
    if not token and not is_loopback_bind(host):
        warn(exposed_warning(shown))
    announce(f"loadtester serve listening on http://{shown}:{bound[1]}/ (db {db_path}"
             f"{', private targets allowed' if allow_private else ''}"
             f"{', token required' if token else ''})")
    log_event("serve_started", url=f"http://{shown}:{bound[1]}/", db=str(db_path),
              allow_private=allow_private, token=bool(token))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
