"""Which targets the web server (`loadtester serve`) may send load to.

`check_target(url, allow_private)` resolves the URL's host with getaddrinfo (every address it
returns, IPv4 and IPv6) and raises `BlockedTarget` when the host is a cloud-metadata name or
when *any* of its addresses is one we refuse; otherwise it returns them (the blast is pinned
to the first).  It only classifies: it never connects to the target (so checking literal
addresses in tests sends nothing anywhere).

Refused always:
  - cloud metadata: the names metadata.google.internal, metadata.goog, metadata,
    instance-data(.ec2.internal) and the addresses 169.254.169.254, 169.254.170.2 (ECS),
    100.100.100.200 (Alibaba), fd00:ec2::254 (AWS IPv6) - even with allow_private;
  - link-local (169.254.0.0/16, fe80::/10), unspecified (0.0.0.0, ::, and 0.0.0.0/8 "this
    network", which Linux routes to this host), multicast, reserved (240.0.0.0/4, broadcast)
    and every other non-global special-purpose range (documentation, benchmarking, ...).
Refused unless allow_private (`loadtester serve --allow-private`, for local use):
  - loopback (127.0.0.0/8, ::1), private (10/8, 172.16/12, 192.168/16, fc00::/7) and
    shared/CGNAT space (100.64.0.0/10; 100.100.100.200 in it stays refused).
IPv6 forms that carry an IPv4 address are judged by that address too: IPv4-mapped
(::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), 6to4 (2002::/16), NAT64 (64:ff9b::/96 and
64:ff9b:1::/48) and Teredo (2001::/32).  Odd IPv4 spellings (2130706433, 0x7f.1, 127.1) are
resolved by getaddrinfo exactly as the engine's connect would resolve them, so they are judged
by the address they mean.  A host that does not resolve is refused.  The name resolved is the
one the blast connects to (spec.parse_url's host), a trailing dot kept: 'localhost.' is not
'localhost'.

Redirects: the engine never follows redirects - a 3xx answer is recorded as a response (and
counted as a success, 1xx-3xx), so a target cannot bounce the load to another host.

DNS rebinding (a name with a very short TTL that first answers a public address, then a
private one): `check_target` returns the addresses it checked and allowed, and the server pins
the blast to the first (`blast --resolve HOST:PORT:ADDRESS`, web/runs.py), so the blast connects
to that address and never asks DNS again; the Host header, TLS SNI and the certificate check
keep the name.
"""
from __future__ import annotations

import ipaddress
import socket

from loadtester.model import SpecError
from loadtester.spec import parse_url

__all__ = ["BlockedTarget", "check_target", "classify_address", "METADATA_HOSTS"]


class BlockedTarget(ValueError):
    """The target may not be tested from this server; the message says why (one line)."""


METADATA_HOSTS = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata", "instance-data",
    "instance-data.ec2.internal", "169.254.169.254", "169.254.170.2", "100.100.100.200",
    "fd00:ec2::254",
})
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))

_PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[list, bool]:
    """(IPv4 addresses an IPv6 address carries, whether the IPv6 address is only a wrapper).

    IPv4-mapped, IPv4-compatible and NAT64 addresses reach exactly the IPv4 address inside:
    they are judged by it alone.  6to4 and Teredo addresses are IPv6 addresses in their own
    right that also route via an IPv4 address: both must be allowed."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped], True
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)], True
    if ip.sixtofour is not None:
        return [ip.sixtofour], False
    if ip.teredo is not None:
        return list(ip.teredo), False                     # (server, client)
    return [], False


def _classify_one(ip, allow_private: bool) -> str | None:
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified or (ip.version == 4 and ip in _THIS_NETWORK):
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_loopback:
        return None if allow_private else "a loopback address"
    if any(ip in net for net in _PRIVATE_NETWORKS if net.version == ip.version) \
            or (ip.version == 6 and ip.is_site_local):
        return None if allow_private else "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "a special-purpose (non-global) address"
    return None


def classify_address(address: str, allow_private: bool = False) -> str | None:
    """Why this address is refused ('a loopback address', ...), or None when it is allowed."""
    text = str(address).split("%", 1)[0]                  # drop an IPv6 zone (fe80::1%eth0)
    ip = ipaddress.ip_address(text)
    if ip.version == 6:
        inner, wrapper_only = _embedded_ipv4(ip)
        for v4 in inner:
            reason = _classify_one(v4, allow_private)
            if reason is not None:
                return f"{reason} ({v4} inside {ip})"
        if wrapper_only:
            return None
    return _classify_one(ip, allow_private)


def check_target(url: str, allow_private: bool) -> list[str]:
    """Raise BlockedTarget unless every address url's host resolves to may be tested; return
    those addresses, IPv4 first (a local server is most often on 127.0.0.1 alone, and a pinned
    blast has no other address to fall back on), else in getaddrinfo's order.

    The name resolved here is the very one the blast's engine resolves and connects to
    (spec.parse_url's host: IDNA-encoded, lower case, a trailing dot kept): 'localhost.' is
    an absolute DNS name that need not mean what 'localhost' does, so it is checked as itself.
    Only the comparison with the metadata names ignores a trailing dot."""
    try:
        target = parse_url(str(url))
    except SpecError as exc:
        raise BlockedTarget(str(exc)) from None
    host, port = target.host, target.port
    if host.rstrip(".") in METADATA_HOSTS:
        raise BlockedTarget(f"target {host} is a cloud metadata service; refused")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise BlockedTarget(f"cannot resolve host {host!r}: {reason}") from None
    addresses = sorted(dict.fromkeys(str(info[4][0]) for info in infos
                                     if info[0] in (socket.AF_INET, socket.AF_INET6)),
                       key=lambda address: ":" in address)
    if not addresses:
        raise BlockedTarget(f"cannot resolve host {host!r}: no IPv4 or IPv6 address")
    for address in addresses:
        try:
            reason = classify_address(address, allow_private)
        except ValueError:
            reason = "not an IP address"
        if reason is not None:
            shown = host if host == address.lower() else f"{host} ({address})"
            local = reason.startswith(("a loopback", "a private"))
            hint = ("; start the server with --allow-private to test local targets"
                    if local and not allow_private else "")
            raise BlockedTarget(f"target {shown} is {reason}; refused{hint}")
    return addresses
