"""A run's validated configuration, and the request bytes built once from it."""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
import os
import re
from typing import Any
from urllib.parse import quote, urlsplit

from loadtester import __version__
from loadtester.feed import DEFAULT_DATA_MAX_MB, FeedError, Variants, read_data_file, render_variants
from loadtester.headers import CONTROL_RE, parse_header, read_headers_file, stored_headers
from loadtester.model import SpecError
from loadtester.units import UnitError, parse_duration_s

DEFAULT_DURATION_S = 10.0
DEFAULT_TIMEOUT_S = 10.0
USER_AGENT = f"loadtester/{__version__}"
# Bounds that keep every count and time inside the engine's integers (and the run sane).
MAX_DURATION_S = 366 * 86400.0          # a year
MAX_REQUESTS = 1 << 53
MAX_CONNECTIONS = 1_000_000
MAX_WORKERS = 256                       # the stored request row keeps the worker in 8 bits
MAX_RATE_PER_S = 1e9
MAX_PIPELINE = 256                      # requests written at once on a connection (--pipeline)
MAX_WEIGHT_PERIOD = 1_000_000           # turns in one round of a weighted interleave
# What stays as it is in a path or query; everything else (non-ASCII, spaces, controls) is
# percent-encoded as UTF-8, as browsers and curl do.
URL_SAFE = "/?&=;:@!$'()*+,~%-._#[]"


def parse_rate(text: str) -> float:
    """'5000', '5000/s', '300/m' -> requests per second."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|m|h))?\s*$", str(text))
    if not match or float(match.group(1)) <= 0:
        raise SpecError(f"invalid rate {text!r}: use requests per second, e.g. 1000 or 300/m")
    return float(match.group(1)) / {None: 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


@dataclasses.dataclass(frozen=True)
class Url:
    """An http(s) URL taken apart: where to connect and what goes on the request line."""
    text: str            # as given
    scheme: str
    host: str
    port: int
    path: str            # path + query, as sent on the request line

    @property
    def host_header(self) -> str:
        default_port = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default_port else f"{host}:{self.port}"


def parse_url(url: str) -> Url:
    """An http(s) URL, ready for the wire: the host IDNA-encoded (例え.jp -> xn--r8jz45g.jp),
    the path and query percent-encoded where they hold anything but printable ASCII."""
    if CONTROL_RE.search(url.strip()):
        raise SpecError(f"invalid URL {url!r}: control characters are not allowed")
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:                  # 'Invalid IPv6 URL'
        raise SpecError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise SpecError(f"invalid URL {url!r}: scheme must be http or https")
    if not parts.hostname:
        raise SpecError(f"invalid URL {url!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise SpecError(f"invalid URL {url!r}: bad port") from None
    if port == 0:
        raise SpecError(f"invalid URL {url!r}: port 0 is not a port to connect to")
    port = port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise SpecError(f"invalid URL {url!r}: the host is not a valid name") from None
    path = quote(parts.path or "/", safe=URL_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=URL_SAFE)
    return Url(text=url.strip(), scheme=parts.scheme, host=host, port=port, path=path)


@dataclasses.dataclass(frozen=True)
class Target:
    """One target of a run: where, and the request sent there."""
    url: Url
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    weight: int = 1                  # `weight: N` in a targets file: its share of the turns

    def request_bytes(self) -> bytes:
        """The whole request, built once and written as-is for every request."""
        names = {name.lower() for name, _ in self.headers}
        lines = [f"{self.method} {self.url.path} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {self.url.host_header}")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {USER_AGENT}")
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if (self.body or self.method in ("POST", "PUT", "PATCH")) and "content-length" not in names:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.url.scheme, self.url.host, self.url.port)


@dataclasses.dataclass(frozen=True)
class Pin:
    """`--resolve HOST:PORT:ADDRESS[,ADDRESS...]` (curl's): connections to HOST:PORT go to
    ADDRESS, with no DNS lookup, and with several addresses the run's connections take them
    in turn (as k6's dns select roundRobin); the Host header, TLS SNI and the certificate's
    name check keep HOST."""
    host: str
    port: int
    addresses: tuple[str, ...]   # IP literals, without brackets

    def __str__(self) -> str:
        return f"{self.host}:{self.port}:" + ",".join(f"[{a}]" if ":" in a else a
                                                      for a in self.addresses)


# HOST (a name or IPv4 literal, nothing that could hide another host) : PORT : ADDRESSES
PIN_RE = re.compile(r"(?P<host>[^:/@?#\s\[\]]+):(?P<port>[0-9]+):(?P<addresses>.+)")
# one address of a pin's comma-separated list: [IPv6] or a bare one
PIN_ADDRESS_RE = re.compile(r"\[(?P<bracketed>[^\[\]]+)\]|(?P<bare>[^\[\],]+)")
MAX_PIN_ADDRESSES = 64


def parse_pins(texts, targets: list[Target]) -> tuple[Pin, ...]:
    """`--resolve`'s pins: ADDRESS an IP literal (IPv6 in brackets), each pin on a target's
    host:port (its host as parse_url gives it), each host:port pinned once."""
    pins: dict[tuple[str, int], Pin] = {}
    for text in texts:
        match = PIN_RE.fullmatch(text.strip())
        if not match:
            raise SpecError(f"invalid --resolve {text!r}: use HOST:PORT:ADDRESS[,ADDRESS...], "
                            "e.g. example.com:443:127.0.0.1")
        if not 1 <= int(match["port"]) <= 65535:
            raise SpecError(f"invalid --resolve {text!r}: port {match['port']} is not from 1 to "
                            "65535")
        addresses = []
        for part in match["addresses"].split(","):
            found = PIN_ADDRESS_RE.fullmatch(part.strip())
            address = (found["bracketed"] or found["bare"]) if found else part.strip()
            try:
                addresses.append(str(ipaddress.ip_address(address)))
            except ValueError:
                raise SpecError(f"invalid --resolve {text!r}: {address or 'an empty item'} is "
                                "not an IP address (IPv6 in brackets: [::1]; several: "
                                "ADDRESS,ADDRESS)") from None
        if len(addresses) > MAX_PIN_ADDRESSES:
            raise SpecError(f"invalid --resolve {text!r}: {len(addresses)} addresses, at most "
                            f"{MAX_PIN_ADDRESSES}")
        if len(set(addresses)) != len(addresses):
            raise SpecError(f"invalid --resolve {text!r}: an address is given twice")
        pin = Pin(parse_url(f"http://{match['host']}/").host, int(match["port"]), tuple(addresses))
        if not any((t.url.host, t.url.port) == (pin.host, pin.port) for t in targets):
            raise SpecError(f"--resolve {text}: no target is on {pin.host}:{pin.port}")
        if (pin.host, pin.port) in pins:
            raise SpecError(f"--resolve {text}: {pin.host}:{pin.port} is pinned twice")
        pins[pin.host, pin.port] = pin
    return tuple(pins.values())


@dataclasses.dataclass(frozen=True)
class RunSpec:
    url: Url
    connections: int = 50
    duration_s: float | None = DEFAULT_DURATION_S
    requests: int | None = None
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    weight: int = 1                                  # the first target's (targets file)
    timeout_s: float = DEFAULT_TIMEOUT_S
    insecure: bool = False
    rate_per_s: float = 0.0
    ramp_up_s: float = 0.0
    workers: int = 1
    pipeline: int = 1                                # `--pipeline N`: HTTP/1.1 pipelining depth
    label: str = ""
    extra_targets: tuple[Target, ...] = ()   # after the first (url, method, ...)
    shard: tuple[int, int] = (0, 1)                  # (index, count) of `--shard i/n`
    run_group: str = ""                              # `--run-id`: shards of one run share it
    variants: Variants | None = None                 # `--data FILE`: rendered per row
    journey: bool = False                            # `--journey FILE`: targets are its steps
    think_s: tuple[float, float] = (0.0, 0.0)        # `--think`: uniform wait between requests
    seed: int | None = None                          # `--seed`: repeatable random choices
    pins: tuple[Pin, ...] = ()                       # `--resolve HOST:PORT:ADDRESS`

    def connect_hosts(self, url: Url) -> tuple[str, ...]:
        """Where connections for `url` go: the addresses pinned for its host:port (taken in
        turn), or the host itself (resolved when connecting)."""
        return next((p.addresses for p in self.pins if (p.host, p.port) == (url.host, url.port)),
                    (url.host,))

    @property
    def weighted(self) -> bool:
        return any(t.weight != 1 for t in self.targets)

    @property
    def traffic(self) -> dict | None:
        """What shapes the requests beyond the targets (data, weights, journey, think), as
        stored with the run; None for a plain run."""
        if not (self.variants or self.weighted or self.journey or self.think_s[1]):
            return None
        return {
            "data": self.variants.describe() if self.variants else None,
            "weights": [t.weight for t in self.targets] if self.weighted else None,
            "journey": ([f"{t.method} {t.url.text}" for t in self.targets]
                        if self.journey else None),
            "think_ms": ([self.think_s[0] * 1000, self.think_s[1] * 1000]
                         if self.think_s[1] else None),
            "seed": self.seed,
        }

    @property
    def mode(self) -> str:
        return "rate" if self.rate_per_s > 0 else "closed"

    @property
    def targets(self) -> tuple[Target, ...]:
        first = Target(self.url, self.method, self.headers, self.body, self.weight)
        return (first, *self.extra_targets)

    def share(self, worker: int, workers: int) -> dict:
        """This worker's part of this shard's part of the run: connections, count and
        rate split evenly over shards x workers slots."""
        shard_index, shard_count = self.shard
        slots = shard_count * workers
        slot = shard_index * workers + worker

        def part(total: int, at: int = slot) -> int:
            return total // slots + (1 if at < total % slots else 0)

        return {
            "slot": slot, "slots": slots,
            "connections": max(1, part(self.connections)),
            # the run's index of this slot's first connection (--data-per-connection rows)
            "first_connection": sum(max(1, part(self.connections, s)) for s in range(slot)),
            "max_requests": part(self.requests) if self.requests else 0,
            "rate_per_s": self.rate_per_s / slots if self.rate_per_s else 0.0,
            # Slots interleave on one timetable: slot k sends the k-th of every `slots`.
            "phase_s": (slot / self.rate_per_s) if self.rate_per_s else 0.0,
        }

    def config(self) -> dict:
        """JSON-ready config, as stored with the run."""
        return {
            "url": self.url.text, "method": self.method, "connections": self.connections,
            "duration_s": self.duration_s, "requests": self.requests,
            "headers": [list(h) for h in stored_headers(self.headers)],
            # The body itself is not kept (it may hold a password): what tells two runs' apart.
            "body_bytes": len(self.body),
            "body_sha256": hashlib.sha256(self.body).hexdigest() if self.body else None,
            "timeout_s": self.timeout_s, "insecure": self.insecure, "rate": self.rate_per_s,
            "ramp_up_s": self.ramp_up_s, "workers": self.workers, "label": self.label,
            "mode": self.mode, "pipeline": self.pipeline,
            "targets": [{"url": t.url.text, "method": t.method} for t in self.targets],
            "shard": f"{self.shard[0]}/{self.shard[1]}", "run_id": self.run_group or None,
            "traffic": self.traffic, "resolve": [str(pin) for pin in self.pins],
        }


def check_keylog_file() -> None:
    """SSLKEYLOGFILE, when set, must be writable before the run starts: each worker opens it
    for the engine's TLS (engine/tls.pyx), and one that cannot would die with no request sent."""
    path = os.environ.get("SSLKEYLOGFILE")
    if not path:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise SpecError(f"cannot write the TLS key log SSLKEYLOGFILE={path!r}: {exc.strerror} "
                        "(unset it, or point it at a writable file)") from None


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return (0, 1)
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or int(match.group(2)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise SpecError(f"invalid shard {text!r}: use i/n with 0 <= i < n, e.g. 0/4")
    return int(match.group(1)), int(match.group(2))


def read_body_file(path: str, shown: str | None = None) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise SpecError(f"cannot read body file {shown or path!r}: {exc.strerror}") from None


def read_targets_file(path: str) -> list[Target]:
    """vegeta's format: blocks of `METHOD URL`, then `Name: value` header lines and an
    optional `@path` body line (relative to the file); blank lines between blocks."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read targets file {path!r}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None
    base = os.path.dirname(os.path.abspath(path))
    targets: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            current = None if not line else current
            continue
        where = f"{path}:{number}"
        if current is None:
            method, _, url = line.partition(" ")
            if not url.strip() or not re.fullmatch(r"[A-Za-z]+", method):
                raise SpecError(f"{where}: expected 'METHOD URL', got {line!r}")
            try:
                current = {"url": parse_url(url.strip()), "method": method.upper(),
                           "headers": [], "body": b"", "weight": 1}
            except SpecError as exc:
                raise SpecError(f"{where}: {exc}") from None
            targets.append(current)
        elif line.lower().startswith("weight:"):
            weight = line.partition(":")[2].strip()
            if not weight.isdigit() or not 1 <= int(weight) <= MAX_WEIGHT_PERIOD:
                raise SpecError(f"{where}: invalid weight {weight!r}: a whole number from 1 "
                                f"to {MAX_WEIGHT_PERIOD:,}")
            current["weight"] = int(weight)
        elif line.startswith("@"):
            try:
                current["body"] = read_body_file(os.path.join(base, line[1:].strip()),
                                                 shown=line[1:].strip())
            except SpecError as exc:
                raise SpecError(f"{where}: {exc}") from None
        else:
            try:
                current["headers"].append(parse_header(line))
            except SpecError as exc:
                raise SpecError(f"{where}: {exc}") from None
    if not targets:
        raise SpecError(f"targets file {path!r} has no targets")
    return [Target(t["url"], t["method"], tuple(t["headers"]), t["body"], t["weight"])
            for t in targets]


def build_spec(url: str | None = None, *, connections: int = 50, duration: str | None = None,
               requests: int | None = None, method: str = "GET", headers=(),
               body: str | None = None, body_file: str | None = None,
               timeout: str | None = None, insecure: bool = False, rate: str | None = None,
               ramp_up: str | None = None, workers: str | int = 1, label: str = "",
               more_urls=(), targets_file: str | None = None, shard: str | None = None,
               run_id: str = "", pipeline: int = 1, data: str | None = None,
               data_order: str | None = None, seed: int | None = None,
               data_max_mb: float = DEFAULT_DATA_MAX_MB, data_per_connection: bool = False,
               journey: str | None = None, think: str | None = None,
               headers_file: str | None = None, resolve=()) -> RunSpec:
    """Validate CLI-shaped input into a RunSpec; every problem is a SpecError.

    Targets are `url` plus `more_urls` (all sent with the same method, headers (`headers`,
    then those of `headers_file`) and body) plus those of `targets_file`; requests go to them
    in turn. `pipeline` N > 1 writes N requests at once on each connection and waits for
    their N responses (closed loop). `resolve`: 'HOST:PORT:ADDRESS' pins (parse_pin), each
    on a target.
    `data` renders `{{column}}` templates once per row (feed.py); `journey` makes the
    targets of that file steps each connection walks in order; `think` ('200ms' or
    '100ms-500ms') waits between a connection's requests (closed loop)."""
    urls = ([url] if url else []) + list(more_urls)
    if journey and (urls or targets_file):
        raise SpecError("give either --journey FILE or URLs / --targets, not both")
    if not urls and not targets_file and not journey:
        raise SpecError("give a URL or --targets FILE")
    if connections < 1:
        raise SpecError(f"invalid connections {connections}: must be at least 1")
    if duration is not None and requests is not None:
        raise SpecError("give either a duration (-d) or a request count (-n), not both")
    check_pipeline(pipeline, open_loop=rate is not None)
    try:
        spec = _build_spec(urls, connections=connections, duration=duration, requests=requests,
                           method=method, headers=headers, body=body, body_file=body_file,
                           timeout=timeout, insecure=insecure, rate=rate, ramp_up=ramp_up,
                           workers=workers, label=label, targets_file=targets_file or journey,
                           shard=shard, run_id=run_id, pipeline=pipeline,
                           headers_file=headers_file, resolve=resolve)
        return _shape_traffic(spec, data=data, data_order=data_order, seed=seed,
                              data_max_mb=data_max_mb, data_per_connection=data_per_connection,
                              journey=journey, think=think)
    except UnitError as exc:
        raise SpecError(str(exc)) from None
    except FeedError as exc:
        raise SpecError(str(exc)) from None


def parse_think(text: str) -> tuple[float, float]:
    """'200ms' -> (0.2, 0.2); '100ms-500ms' -> (0.1, 0.5)."""
    low, sep, high = text.strip().partition("-")
    try:
        low_s = parse_duration_s(low.strip(), "think time")
        high_s = parse_duration_s(high.strip(), "think time") if sep else low_s
    except UnitError:
        raise SpecError(f"invalid think time {text!r}: use a duration or a range low-high, "
                        "e.g. 200ms or 100ms-500ms") from None
    if high_s < low_s:
        raise SpecError(f"invalid think time {text!r}: the range goes from low to high")
    if high_s <= 0:
        raise SpecError(f"invalid think time {text!r}: must be more than 0")
    _check_at_most(high_s, "think time", text)
    return low_s, high_s


def weighted_turns(weights: list[int]) -> list[int]:
    """One round of a smooth weighted interleave (nginx's): weights 5,1,1 -> the indexes
    0 0 1 0 2 0 0, each index exactly its weight's times, spread out, the same every time."""
    divisor = math.gcd(*weights)
    shares = [w // divisor for w in weights]
    total = sum(shares)
    if total > MAX_WEIGHT_PERIOD:
        raise SpecError(f"weights {', '.join(map(str, weights))} need {total:,} turns for one "
                        f"exact round: at most {MAX_WEIGHT_PERIOD:,} (use smaller numbers)")
    current = [0] * len(shares)
    turns = []
    for _ in range(total):
        for index, share in enumerate(shares):
            current[index] += share
        chosen = max(range(len(shares)), key=current.__getitem__)
        current[chosen] -= total
        turns.append(chosen)
    return turns


def _refuse_unfilled_templates(targets) -> None:
    """Without --data a '{{name}}' in a URL or a header value would go out as it is (no
    server means one there): refused.  A body is sent as given: '{{name}}' may be its text."""
    from loadtester.feed import head_placeholders
    for number, target in enumerate(targets, 1):
        names = head_placeholders(target)
        if names:
            raise SpecError(f"target {number} ({target.method} {target.url.text}): {{{{{names[0]}}}}} "
                            "needs --data FILE (a template is filled from its rows)")


def _shape_traffic(spec: RunSpec, *, data, data_order, seed, data_max_mb, data_per_connection,
                   journey, think) -> RunSpec:
    """Data, weights, journeys and think time on top of a plain spec (checked together)."""
    origins = {t.origin for t in spec.targets}
    think_s = parse_think(think) if think else (0.0, 0.0)
    if think and spec.rate_per_s:
        raise SpecError("--think is for closed loop (connections as users): not with --rate")
    if journey and any(t.weight != 1 for t in spec.targets):
        raise SpecError(f"{journey}: a journey walks every step in order: 'weight:' has no "
                        "place in it")
    if spec.weighted and len(origins) > 1:
        raise SpecError("weights need every target on one scheme://host:port (a connection "
                        "keeps to one)")
    if journey and len(origins) > 1:
        raise SpecError(f"{journey}: every step of a journey must be on one scheme://host:port "
                        "(a connection keeps to one)")
    if data is None:
        for flag, given in (("--data-order", data_order), ("--data-per-connection",
                                                          data_per_connection)):
            if given:
                raise SpecError(f"{flag} needs --data FILE")
        _refuse_unfilled_templates(spec.targets)
    if not 0 < data_max_mb <= 1 << 20:
        raise SpecError(f"invalid --data-max-mb {data_max_mb:g}: more than 0, at most "
                        f"{1 << 20:,}")
    variants = None
    if data is not None:
        table = read_data_file(data, max_bytes=int(data_max_mb * (1 << 20)))
        from loadtester.feed import check_templates, target_uses_data, uses_template
        for number, target in enumerate(spec.targets, 1):
            check_templates(target, f"target {number} ({target.method} {target.url.text})")
        if not any(target_uses_data(t) for t in spec.targets):
            raise SpecError(f"--data {data}: no target uses a {{{{column}}}} of it (put "
                            "{{name}} in the URL, a header value or the body)")
        if data_per_connection and spec.connections > table.rows:
            raise SpecError(f"--data-per-connection: {spec.connections:,} connections but "
                            f"{table.rows:,} rows in {data} (one row per connection)")
        if seed is None and spec.shard[1] > 1 and (
                data_order == "random" or uses_template(list(spec.targets), "uuid")):
            seed = shard_seed(spec.run_group, data_order == "random")
        variants = render_variants(list(spec.targets), table, order=data_order or "sequential",
                                   seed=seed, per_connection=data_per_connection,
                                   max_bytes=int(data_max_mb * (1 << 20)))
    shaped = variants is not None or spec.weighted or journey
    if shaped and spec.pipeline > 1:
        raise SpecError("--pipeline above 1 cannot be combined with --data, weights or "
                        "--journey (a pipelined batch is the same requests in order)")
    if think and spec.pipeline > 1:
        raise SpecError("--think cannot be combined with --pipeline above 1 (a pipelined "
                        "batch goes out at once, with no wait between its requests)")
    if spec.weighted:
        weighted_turns([t.weight for t in spec.targets])      # (checks the round's length)
    return dataclasses.replace(spec, variants=variants, journey=bool(journey), think_s=think_s,
                               seed=seed)


def shard_seed(run_group: str, required: bool) -> int | None:
    """A seed for shards given none: every shard must shuffle the rows the same way (they
    interleave one order) and draw the same {{uuid}}s (their merged variants are one set), so
    it comes from the run's --run-id, which they share.  Without one: refused when `required`
    (a shuffle per shard sends some rows twice and others never), else None (drawn)."""
    if not run_group:
        if required:
            raise SpecError("--data-order random with --shard needs --seed or --run-id: every "
                            "shard must shuffle the rows the same way")
        return None
    return int.from_bytes(hashlib.sha256(run_group.encode()).digest()[:4], "big")


def check_pipeline(pipeline: int, *, open_loop: bool, rate_name: str = "--rate",
                   pipeline_name: str = "--pipeline") -> None:
    """A pipelining depth: 1 to MAX_PIPELINE, and above 1 only in a closed loop (the names are
    the options' or, for the web API, its fields')."""
    if not 1 <= pipeline <= MAX_PIPELINE:
        raise SpecError(f"invalid {pipeline_name.lstrip('-')} {pipeline}: from 1 to {MAX_PIPELINE}")
    if pipeline > 1 and open_loop:
        raise SpecError(f"{rate_name} cannot be combined with {pipeline_name} above 1: a pipelined "
                        "connection waits for its whole batch, so there is no timetable to keep")


def _check_at_most(seconds: float, what: str, text: str | None) -> None:
    if seconds > MAX_DURATION_S:
        raise SpecError(f"invalid {what} {text!r}: at most {MAX_DURATION_S / 86400:.0f} days")


def _build_spec(urls, *, connections, duration, requests, method, headers, body, body_file,
                timeout, insecure, rate, ramp_up, workers, label, targets_file, shard,
                run_id, pipeline, headers_file, resolve) -> RunSpec:
    duration_s = None
    if connections > MAX_CONNECTIONS:
        raise SpecError(f"invalid connections {connections}: at most {MAX_CONNECTIONS:,}")
    if requests is not None:
        if requests < 1:
            raise SpecError(f"invalid request count {requests}: must be at least 1")
        if requests > MAX_REQUESTS:
            raise SpecError(f"invalid request count {requests}: at most {MAX_REQUESTS:,}")
    else:
        duration_s = parse_duration_s(duration) if duration is not None else DEFAULT_DURATION_S
        if duration_s <= 0:
            raise SpecError(f"invalid duration {duration!r}: must be more than 0")
        _check_at_most(duration_s, "duration", duration)
    if body is not None and body_file is not None:
        raise SpecError("give either --body or --body-file, not both")
    payload = body.encode() if body is not None else b""
    if body_file is not None:
        payload = read_body_file(body_file)
    timeout_s = parse_duration_s(timeout, "timeout") if timeout is not None else DEFAULT_TIMEOUT_S
    if timeout_s <= 0:
        raise SpecError(f"invalid timeout {timeout!r}: must be more than 0")
    _check_at_most(timeout_s, "timeout", timeout)
    ramp_up_s = parse_duration_s(ramp_up, "ramp-up") if ramp_up is not None else 0.0
    _check_at_most(ramp_up_s, "ramp-up", ramp_up)
    rate_per_s = parse_rate(rate) if rate is not None else 0.0
    if rate_per_s > MAX_RATE_PER_S:
        raise SpecError(f"invalid rate {rate!r}: at most {MAX_RATE_PER_S:,.0f} requests per second")
    if str(workers) == "auto":
        worker_count = os.cpu_count() or 1
    else:
        try:
            worker_count = int(workers)
        except ValueError:
            raise SpecError(f"invalid workers {workers!r}: a number or 'auto'") from None
        if not 1 <= worker_count <= MAX_WORKERS:
            raise SpecError(f"invalid workers {workers!r}: from 1 to {MAX_WORKERS}")
    worker_count = min(worker_count, connections)
    method = method.upper()
    if not re.fullmatch(r"[A-Z]+", method):
        raise SpecError(f"invalid method {method!r}")
    header_pairs = tuple(parse_header(h) for h in headers)
    if headers_file is not None:
        header_pairs += tuple(read_headers_file(headers_file))
    all_targets = [Target(parse_url(u), method, header_pairs, payload) for u in urls]
    if targets_file:
        all_targets += read_targets_file(targets_file)
    if any(target.url.scheme == "https" for target in all_targets):
        check_keylog_file()
    first = all_targets[0]
    return RunSpec(
        url=first.url, connections=connections, duration_s=duration_s, requests=requests,
        method=first.method, headers=first.headers, body=first.body, weight=first.weight,
        timeout_s=timeout_s, insecure=insecure, rate_per_s=rate_per_s, ramp_up_s=ramp_up_s,
        workers=worker_count, label=label, extra_targets=tuple(all_targets[1:]),
        shard=parse_shard(shard), run_group=run_id, pipeline=pipeline,
        pins=parse_pins(resolve, all_targets),
    )
