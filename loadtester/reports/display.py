"""How the web app shows a run: hosts and URLs (masked when the run asked for it; one
function each), never a password, the one-line summary and numbers as the CLI parses them."""
from __future__ import annotations

import re
import urllib.parse


def plain_number(value: float) -> str:
    """A number as the CLI parses it: no exponent, no trailing zeros."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text or "0"


def mask_host(host: str | None) -> str | None:
    """'example.com' -> 'ex*****.com' (first two characters and the last label kept)."""
    if not host:
        return host
    dot = host.rfind(".")
    tail = host[dot:] if dot > 2 else ""
    head = host[:2]
    return head + "*" * max(1, len(host) - len(head) - len(tail)) + tail


HIDDEN = "***"                      # what a masked URL shows for its path and its query


def display_host(host: str | None, masked: bool) -> str | None:
    """The host as the API shows it: masked when the run asked for it."""
    return mask_host(host) if masked else host


# An IP address in a message: IPv4, or IPv6 with the port the engine writes after it run in
# ('connection refused ::1:8080').
ADDRESS_RE = re.compile(r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}(?![\w.])"
                        r"|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,}(?![\w:]))")


def display_text(text: str | None, host: str | None, masked: bool) -> str | None:
    """A message about the run (an error's first message, why it failed) as it is shown: with
    the host masked wherever it names it ('connection refused 12******.1:8080'), and so is
    any IP address, since a run pinned to an address (--resolve; serve pins every blast to
    the address it checked) names the address it connected to."""
    if not text or not masked or not host:
        return text
    text = text.replace(host, mask_host(host) or "")
    return ADDRESS_RE.sub(lambda found: mask_host(found.group()) or "", text)


def display_messages(messages: dict[str, str], host: str | None,
                     masked: bool) -> dict[str, str]:
    """Each error kind's first message, as display_text shows it."""
    return {kind: display_text(text, host, masked) or "" for kind, text in messages.items()}


def display_url(url: str | None, masked: bool) -> str | None:
    """The URL as everything that shows a run shows it (the API's payloads, the run list,
    the pages, both reports, /metrics labels, the PipeOps responses, the logs): never a
    password; when the run asked for masking (mask_host), the host masked and the path and
    query hidden too, since they may carry keys: 'https://ex*****.com:8443/***?***'."""
    if not url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        hostname, port = parts.hostname or "", parts.port
    except ValueError:
        return mask_host(url) if masked else url
    if not masked and "@" not in parts.netloc:
        return url
    shown = display_host(hostname, masked) or ""
    if ":" in shown:
        shown = f"[{shown}]"
    netloc = shown + (f":{port}" if port else "")
    if not masked:
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query,
                                        parts.fragment))
    path = "/" + HIDDEN if parts.path.strip("/") else parts.path
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, HIDDEN if parts.query else "",
                                    ""))


def summary_line(host: str | None, users: int | None, duration: float | None,
                 success_rate: float | None, rps: float | None, avg_ms: float | None,
                 running: bool = False, requests: int | None = None) -> str:
    """PipeOps' one-liner: 'Tested example.com with 10 virtual users for 30s - 98.5% success
    rate, 125.32 RPS, 45.23ms avg latency' ('for 1,000 requests' for a run of -n 1000)."""
    verb = "Testing" if running else "Tested"
    length = (f"{plain_number(duration)}s" if duration
              else f"{requests:,} requests" if requests else "?")
    rate = f"{success_rate * 100:.1f}%" if success_rate is not None else "n/a"
    speed = f"{rps:.2f}" if rps is not None else "n/a"
    avg = f"{avg_ms:.2f}ms" if avg_ms is not None else "n/a"
    return (f"{verb} {host or '?'} with {users if users is not None else '?'} virtual users for "
            f"{length} - {rate} success rate, {speed} RPS, {avg} avg latency")
