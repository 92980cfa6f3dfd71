"""loadtester.web.ssrf: which targets `loadtester serve` refuses.

No test here resolves an external name or opens a connection: literal addresses are only
classified (getaddrinfo turns a literal into itself without DNS), 'localhost' is answered
locally, and the few name tests replace socket.getaddrinfo."""
from __future__ import annotations

import socket

import pytest

from loadtester.web import ssrf
from loadtester.web.ssrf import BlockedTarget, check_target, classify_address

BLOCKED_ALWAYS = [
    ("169.254.169.254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("169.254.170.2", "cloud metadata"),
    ("[fd00:ec2::254]", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("[fe80::1]", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("[::]", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("[ff02::1]", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "special-purpose"),          # documentation (TEST-NET-1)
    ("198.18.0.1", "special-purpose"),          # benchmarking
    ("[2001:db8::1]", "special-purpose"),       # documentation
    # IPv4 inside IPv6: mapped, compatible, 6to4, NAT64
    ("[::ffff:169.254.169.254]", "cloud metadata"),
    ("[64:ff9b::a9fe:a9fe]", "cloud metadata"),
    ("[2002:a9fe:a9fe::1]", "cloud metadata"),
    ("[::ffff:224.0.0.1]", "multicast"),
]

BLOCKED_UNLESS_PRIVATE = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("[::1]", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.254", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.1", "private"),
    ("192.168.1.1", "private"),
    ("[fc00::1]", "private"),
    ("[fd12:3456::1]", "private"),
    ("100.64.0.1", "private"),                  # shared address space (CGNAT)
    ("100.127.255.254", "private"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:10.1.2.3]", "private"),
    ("[::127.0.0.1]", "loopback"),              # IPv4-compatible
    ("[2002:7f00:1::1]", "loopback"),           # 6to4 of 127.0.0.1
    ("[2002:c0a8:101::1]", "private"),          # 6to4 of 192.168.1.1
    ("[64:ff9b::a00:1]", "private"),            # NAT64 of 10.0.0.1
    # spellings inet_aton accepts, resolved like the engine's connect would
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("127.1", "loopback"),
    ("0177.0.0.1", "loopback"),
]

ALLOWED_PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.32.0.1", "100.128.0.1",
                  "[2606:4700:4700::1111]", "[::ffff:8.8.8.8]", "[64:ff9b::808:808]"]


@pytest.mark.parametrize("host,reason", BLOCKED_ALWAYS)
@pytest.mark.parametrize("allow_private", [False, True])
def test_always_blocked(host, reason, allow_private):
    with pytest.raises(BlockedTarget, match=reason):
        check_target(f"http://{host}/latest/meta-data/", allow_private)


@pytest.mark.parametrize("host,reason", BLOCKED_UNLESS_PRIVATE)
def test_local_targets_need_allow_private(host, reason):
    with pytest.raises(BlockedTarget, match=reason) as caught:
        check_target(f"http://{host}:8080/", False)
    assert "--allow-private" in str(caught.value)
    check_target(f"http://{host}:8080/", True)              # allowed: no exception


@pytest.mark.parametrize("host", ALLOWED_PUBLIC)
def test_public_addresses_pass(host):
    check_target(f"https://{host}/", False)


def test_localhost_name_is_loopback():
    with pytest.raises(BlockedTarget, match="localhost .*loopback"):
        check_target("http://localhost:9/", False)
    check_target("http://localhost:9/", True)


@pytest.mark.parametrize("name", ["metadata.google.internal", "METADATA.google.internal.",
                                  "metadata", "instance-data", "metadata.goog",
                                  "instance-data.ec2.internal"])
@pytest.mark.parametrize("allow_private", [False, True])
def test_metadata_names_refused_without_resolving(monkeypatch, name, allow_private):
    def no_lookup(*args, **kwargs):
        raise AssertionError("metadata names must be refused before any lookup")
    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    with pytest.raises(BlockedTarget, match="cloud metadata"):
        check_target(f"http://{name}/computeMetadata/v1/", allow_private)


def _fake_resolver(monkeypatch, answers: dict):
    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for address in answers[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return out
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_unresolvable_host_refused(monkeypatch):
    _fake_resolver(monkeypatch, {})
    with pytest.raises(BlockedTarget, match="cannot resolve host 'nowhere.test'"):
        check_target("http://nowhere.test/", True)


def test_every_address_of_a_name_is_checked(monkeypatch):
    _fake_resolver(monkeypatch, {
        "public.test": ["203.0.114.7", "2606:4700::6810:84e5"],
        "mixed.test": ["203.0.114.7", "10.1.2.3"],
        "sneaky.test": ["2606:4700::6810:84e5", "::ffff:169.254.169.254"],
        "rebind.test": ["100.100.100.200"],
    })
    check_target("http://public.test/", False)
    with pytest.raises(BlockedTarget, match=r"mixed.test \(10.1.2.3\) is a private address"):
        check_target("http://mixed.test/", False)
    check_target("http://mixed.test/", True)
    with pytest.raises(BlockedTarget, match="cloud metadata"):
        check_target("http://sneaky.test/", True)
    with pytest.raises(BlockedTarget, match="cloud metadata"):
        check_target("http://rebind.test/", True)


@pytest.mark.parametrize("url,message", [
    ("ftp://127.0.0.1/", "scheme must be http or https"),
    ("file:///etc/passwd", "scheme must be http or https"),
    ("gopher://127.0.0.1:70/", "scheme must be http or https"),
    ("http:///path", "no host"),
    ("http://127.0.0.1:99999/", "invalid URL"),
])
def test_bad_urls(url, message):
    with pytest.raises(BlockedTarget, match=message):
        check_target(url, True)


def test_classify_address_directly():
    assert classify_address("8.8.8.8") is None
    assert classify_address("127.0.0.1") == "a loopback address"
    assert classify_address("127.0.0.1", allow_private=True) is None
    assert classify_address("fe80::1%eth0") == "a link-local address"       # zone id dropped
    assert classify_address("169.254.169.254", allow_private=True) == "a cloud metadata address"
    assert "inside" in classify_address("::ffff:10.0.0.1")
    assert classify_address("2001:0:4136:e378:8000:63bf:3fff:fdd2") is not None   # Teredo, 192.0.2.45


def test_docstring_covers_redirects_and_rebinding():
    doc = ssrf.__doc__.lower()
    assert "redirect" in doc and "never follows" in doc
    assert "rebinding" in doc


@pytest.mark.parametrize(("url", "name"), [
    ("http://LocalHost.:9/", "localhost."),          # an absolute name: resolved as itself
    ("http://localhost:9/", "localhost"),
    ("https://例え.jp./x", "xn--r8jz45g.jp."),
    ("http://[::1]:9/", "::1"),
    ("http://2130706433/", "2130706433"),
])
def test_the_name_checked_is_the_name_the_engine_connects_to(monkeypatch, url, name):
    from loadtester.spec import parse_url
    asked = []

    def getaddrinfo(host, port, *args, **kwargs):
        asked.append((host, port))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.114.7", port))]
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    check_target(url, False)
    target = parse_url(url)                          # what the blast's engine connects to
    assert asked == [(target.host, target.port)] and target.host == name


def test_a_trailing_dot_is_not_stripped_before_resolving(monkeypatch):
    # 'split.test' and 'split.test.' may answer differently (search domains, another resolver)
    _fake_resolver(monkeypatch, {"split.test": ["203.0.114.7"], "split.test.": ["10.0.0.5"]})
    check_target("http://split.test/", False)
    with pytest.raises(BlockedTarget, match=r"split.test. \(10.0.0.5\) is a private address"):
        check_target("http://split.test./", False)

