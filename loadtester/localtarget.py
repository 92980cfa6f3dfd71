"""The built-in local target server (`loadtester target`)."""
from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import urllib.request

import uvloop

from loadtester._engine import LocalTargetProtocol, LocalTargetState


async def serve(host: str = "127.0.0.1", port: int = 8080, *, delay_s: float = 0.0,
                status: int = 200, body_size: int = 13, lifetime_s: float | None = None,
                tls_cert: str | None = None, tls_key: str | None = None,
                count_paths: bool = False, announce=print) -> LocalTargetState:
    """Serve until SIGINT/SIGTERM or `lifetime_s`; returns the final counts.
    `count_paths`: tally what each request target (path and query) was served, for
    /__loadtester/paths (costs a dict update per request)."""
    loop = asyncio.get_running_loop()
    state = LocalTargetState(status=status, body_size=body_size, delay_s=delay_s,
                             count_paths=count_paths)
    context = None
    if tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert, tls_key)
    # (LocalTargetProtocol is a protocol by its methods, not an asyncio.BaseProtocol: it has no
    # pause_writing/resume_writing)
    server = await loop.create_server(lambda: LocalTargetProtocol(state, loop),  # type: ignore[arg-type, return-value]
                                      host, port, backlog=4096, reuse_address=True, ssl=context)
    bound = server.sockets[0].getsockname()
    shown_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    scheme = "https" if context else "http"
    announce(f"loadtester target listening on {scheme}://{shown_host}:{bound[1]}/ "
             f"(delay {delay_s * 1000:g}ms, status {status}, body {body_size} bytes)")
    stop = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))  # type: ignore[func-returns-value]
    if lifetime_s:
        loop.call_later(lifetime_s, lambda: stop.done() or stop.set_result(None))  # type: ignore[func-returns-value]
    await stop
    server.close()
    announce(f"served {state.served} requests")
    return state


def run(**kwargs) -> LocalTargetState:
    def announce(line):
        print(line, flush=True)
    return uvloop.run(serve(announce=announce, **kwargs))


def fetch_stats(base_url: str, timeout_s: float = 5.0, what: str = "stats") -> dict:
    """The target's own count of what it served (not counting control requests); `what`
    'paths': per request target (a target started with count_paths)."""
    context = None
    if base_url.startswith("https"):                 # our own target's self-signed certificate
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(base_url.rstrip("/") + "/__loadtester/" + what,
                                timeout=timeout_s, context=context) as response:
        return json.loads(response.read())


if __name__ == "__main__":
    run(port=int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
