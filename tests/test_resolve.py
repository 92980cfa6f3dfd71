"""`blast --resolve HOST:PORT:ADDRESS` (curl's) and the web app pinning each blast to the address
its SSRF check allowed (DNS rebinding).  The name used, loadtester.test, resolves nowhere: a run
on it that is served at all was served through its pin.  Real servers on 127.0.0.1 and ::1."""
from __future__ import annotations

import json

import pytest

from conftest import blast_json, closing_servers, cli, free_port, header_values, self_signed_cert, wait_for
from loadtester.reports.display import display_text
from loadtester.run.runner import RunRefused, preflight
from loadtester.model import SpecError
from loadtester.spec import Pin, build_spec
from loadtester.web import ssrf
from loadtester.web.runs import RunManager
from loadtester.web.validation import validate_start

NAME = "loadtester.test"                    # a reserved TLD: never resolves
UUID = "00000000-0000-4000-8000-000000000001"


# --------------------------------------------------------------------------- the option

def test_pins_are_parsed_and_matched_as_url_hosts():
    spec = build_spec(f"http://{NAME}:8080/", more_urls=[f"https://{NAME}/", "http://other.test/"],
                      resolve=["LoadTester.TEST:8080:127.0.0.1", f"{NAME}:443:[::1]"])
    assert spec.pins == (Pin(NAME, 8080, ("127.0.0.1",)), Pin(NAME, 443, ("::1",)))
    assert [spec.connect_hosts(t.url) for t in spec.targets] == [("127.0.0.1",), ("::1",), ("other.test",)]
    assert spec.config()["resolve"] == [f"{NAME}:8080:127.0.0.1", f"{NAME}:443:[::1]"]
    assert build_spec(f"http://{NAME}/").config()["resolve"] == []


def test_a_pinned_host_is_not_looked_up_but_an_unpinned_port_of_it_is():
    assert preflight(build_spec(f"http://{NAME}:81/", resolve=[f"{NAME}:81:127.0.0.1"])) == []
    spec = build_spec(f"http://{NAME}:81/", more_urls=[f"http://{NAME}:82/"],
                      resolve=[f"{NAME}:81:127.0.0.1"])
    with pytest.raises(RunRefused, match=f"cannot resolve host {NAME}"):
        preflight(spec)


def test_a_host_pinned_twice_is_refused():
    with pytest.raises(SpecError) as info:
        build_spec(f"http://{NAME}/", resolve=[f"{NAME}:80:127.0.0.1", f"{NAME}:80:127.0.0.2"])
    assert str(info.value) == f"--resolve {NAME}:80:127.0.0.2: {NAME}:80 is pinned twice"


@pytest.mark.parametrize(("pin", "message"), [
    ("example.test", "invalid --resolve 'example.test': use HOST:PORT:ADDRESS[,ADDRESS...], "
                     "e.g. example.com:443:127.0.0.1"),
    (f"{NAME}:http:127.0.0.1", f"invalid --resolve '{NAME}:http:127.0.0.1': use "
                               "HOST:PORT:ADDRESS[,ADDRESS...], e.g. example.com:443:127.0.0.1"),
    (f"{NAME}:80:[::1", f"invalid --resolve '{NAME}:80:[::1': [::1 is not an IP address "
                        "(IPv6 in brackets: [::1]; several: ADDRESS,ADDRESS)"),
    (f"user@{NAME}:80:127.0.0.1", f"invalid --resolve 'user@{NAME}:80:127.0.0.1': use "
                                  "HOST:PORT:ADDRESS[,ADDRESS...], e.g. example.com:443:127.0.0.1"),
    (f"{NAME}:80:127.0.0.1,", f"invalid --resolve '{NAME}:80:127.0.0.1,': an empty item is not "
                              "an IP address (IPv6 in brackets: [::1]; several: ADDRESS,ADDRESS)"),
    (f"{NAME}:80:127.0.0.1,127.0.0.1", f"invalid --resolve '{NAME}:80:127.0.0.1,127.0.0.1': an "
                                       "address is given twice"),
    (f"{NAME}:0:127.0.0.1", f"invalid --resolve '{NAME}:0:127.0.0.1': port 0 is not from 1 to "
                            "65535"),
    (f"{NAME}:65536:127.0.0.1", f"invalid --resolve '{NAME}:65536:127.0.0.1': port 65536 is not "
                                "from 1 to 65535"),
    (f"{NAME}:80:localhost", f"invalid --resolve '{NAME}:80:localhost': localhost is not an IP "
                             "address (IPv6 in brackets: [::1]; several: ADDRESS,ADDRESS)"),
    (f"{NAME}:80:127.0.0.256", f"invalid --resolve '{NAME}:80:127.0.0.256': 127.0.0.256 is not an "
                               "IP address (IPv6 in brackets: [::1]; several: ADDRESS,ADDRESS)"),
    ("example.test:443:127.0.0.1", "--resolve example.test:443:127.0.0.1: no target is on "
                                   "example.test:443"),
    (f"{NAME}:443:127.0.0.1", f"--resolve {NAME}:443:127.0.0.1: no target is on {NAME}:443"),
])
def test_bad_pin_is_a_one_line_usage_error(pin, message, tmp_path):
    result = cli("blast", f"http://{NAME}/", "--resolve", pin, "-n", "1", "--db",
                 tmp_path / "runs.db")
    assert (result.returncode, result.stderr, result.stdout) == (2, f"loadtester: error: {message}\n", "")
    assert not (tmp_path / "runs.db").exists()


def test_real_http_goes_to_the_pin_with_the_name_in_host(recording_server, db):
    server, heads = recording_server()
    url = f"http://{NAME}:{server.port}/"
    report = blast_json(url, "--resolve", f"{NAME}:{server.port}:127.0.0.1", "-n", "50", "-c", "2",
                        db=db)
    assert report["requests"] == 50 == server.requests == len(header_values(heads, b"Host"))
    assert set(header_values(heads, b"Host")) == {f"{NAME}:{server.port}"}
    assert report["resolve"] == [f"{NAME}:{server.port}:127.0.0.1"]
    stored = json.loads(cli("show", "last", "--json", "--no-windows", "--db", db).stdout)
    assert stored["resolve"] == [f"{NAME}:{server.port}:127.0.0.1"] and stored["url"] == url


def test_real_ipv6_pin(recording_server, db):
    server, heads = recording_server(host="::1")
    report = blast_json(f"http://{NAME}:{server.port}/", f"--resolve={NAME}:{server.port}:[::1]",
                        "-n", "20", "-c", "2", db=db)
    assert report["requests"] == 20 == server.requests
    assert set(header_values(heads, b"Host")) == {f"{NAME}:{server.port}"}
    assert report["resolve"] == [f"{NAME}:{server.port}:[::1]"]


def test_real_a_dead_pin_names_the_address_it_connected_to(db):
    port = free_port()
    report = blast_json(f"http://{NAME}:{port}/", "--resolve", f"{NAME}:{port}:127.0.0.1",
                        "-n", "2", "-c", "1", db=db, exit_code=1)
    assert report["error_messages"] == {"connect": f"connection refused 127.0.0.1:{port}"}


def test_real_several_addresses_take_the_connections_in_turn_across_workers(recording_server, db):
    # curl's HOST:PORT:ADDR,ADDR; as k6's dns select roundRobin: -c 4 over 2 workers and 2
    # addresses is 2 connections each, every request with the name in Host
    first, first_heads = recording_server(host="127.0.0.1")
    second, second_heads = recording_server(host="127.0.0.2", port=first.port)        # the same port
    report = blast_json(f"http://{NAME}:{first.port}/", "--resolve",
                        f"{NAME}:{first.port}:127.0.0.1,127.0.0.2", "-n", "400", "-c", "4",
                        "--workers", "2", db=db)
    assert report["requests"] == 400 == first.requests + second.requests
    assert (first.connections, second.connections) == (2, 2)
    assert first.requests > 0 and second.requests > 0
    assert set(header_values(first_heads + second_heads, b"Host")) == {f"{NAME}:{first.port}"}
    assert report["resolve"] == [f"{NAME}:{first.port}:127.0.0.1,127.0.0.2"]
    # what each address got, against each server's own count; stored and shown
    assert report["addresses"] == [
        {"address": "127.0.0.1", "connections": 2, "requests": first.requests,
         "successes": first.requests, "errors": 0},
        {"address": "127.0.0.2", "connections": 2, "requests": second.requests,
         "successes": second.requests, "errors": 0}]
    assert json.loads(cli("show", "last", "--json", "--db", db).stdout)["addresses"] == report["addresses"]
    text = cli("show", "last", "--db", db).stdout
    assert f"Address      127.0.0.2: 2 connections, {second.requests:,} requests, 0 errors" in text


def test_real_shards_spread_over_the_addresses_and_merge_adds_their_counts(recording_server,
                                                                         tmp_path):
    from loadtester.analysis import merge
    first, _ = recording_server(host="127.0.0.1")
    second, _ = recording_server(host="127.0.0.2", port=first.port)
    for shard in ("0/2", "1/2"):
        blast_json(f"http://{NAME}:{first.port}/", "--resolve", f"{NAME}:{first.port}:127.0.0.1,127.0.0.2",
                   "-n", "400", "-c", "4", "--shard", shard, "--run-id", "g",   # 2 per shard
                   db=tmp_path / f"{shard[0]}.db")
    merge.merge([tmp_path / "0.db", tmp_path / "1.db"], tmp_path / "all.db")
    shown = json.loads(cli("show", "last", "--json", "--db", tmp_path / "all.db").stdout)
    assert [(a["address"], a["connections"], a["requests"]) for a in shown["addresses"]] == \
        [("127.0.0.1", 2, first.requests), ("127.0.0.2", 2, second.requests)]
    assert first.requests + second.requests == 400 and first.requests > 0 < second.requests


def test_real_a_dead_address_among_several_is_told_and_the_others_serve(recording_server, db):
    live, _heads = recording_server()
    report = blast_json(f"http://{NAME}:{live.port}/", "--resolve",
                        f"{NAME}:{live.port}:127.0.0.1,127.0.0.3", "-d", "1s", "-c", "2",
                        "--workers", "1", db=db)
    # (a duration run may stop with one request of the live connection unanswered)
    assert live.connections == 1 and 0 < report["requests"] <= live.requests <= report["requests"] + 1
    assert report["error_messages"] == {"connect": f"connection refused 127.0.0.3:{live.port}"}
    dead = report["addresses"][1]
    assert report["addresses"][0] == {"address": "127.0.0.1", "connections": 1,
                                      "requests": report["requests"], "successes": report["requests"],
                                      "errors": 0}
    assert (dead["address"], dead["connections"], dead["successes"]) == ("127.0.0.3", 1, 0)
    assert dead["requests"] == dead["errors"] == report["errors_by_kind"]["connect"] > 0


@pytest.fixture
def named_tls_server(tmp_path):
    """start(san, host="127.0.0.1", port=0) -> an HTTPS server with a certificate for `san`
    (which the blast trusts through SSL_CERT_FILE); its `names`: the SNI names it was sent."""
    from test_tls import TlsServer
    made = 0

    def make(san, host="127.0.0.1", port=0):
        nonlocal made
        made += 1
        server = TlsServer(*self_signed_cert(tmp_path, san, name=f"server{made}"), host=host, port=port)
        server.names = []
        server.context.sni_callback = lambda _socket, name, _context: server.names.append(name)
        return server

    yield from closing_servers(make)


def test_real_https_pin_keeps_the_name_for_sni_and_the_certificate(named_tls_server, db,
                                                                   monkeypatch):
    server = named_tls_server(f"DNS:{NAME}")
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))          # no --insecure
    report = blast_json(f"https://{NAME}:{server.port}/", "--resolve",
                        f"{NAME}:{server.port}:127.0.0.1", "-n", "20", "-c", "2", db=db)
    assert report["requests"] == 20 == server.requests and report["errors"] == 0
    assert set(server.names) == {NAME}


def test_real_https_several_addresses_each_get_the_name_for_sni_and_the_certificate(
        named_tls_server, db, monkeypatch, tmp_path):
    first = named_tls_server(f"DNS:{NAME}")
    second = named_tls_server(f"DNS:{NAME}", "127.0.0.2", first.port)
    bundle = tmp_path / "both.pem"
    bundle.write_bytes(first.cert.read_bytes() + second.cert.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))                  # no --insecure
    report = blast_json(f"https://{NAME}:{first.port}/", "--resolve",
                        f"{NAME}:{first.port}:127.0.0.1,127.0.0.2", "-n", "40", "-c", "2",
                        "--workers", "1", db=db)
    assert report["requests"] == 40 == first.requests + second.requests and report["errors"] == 0
    assert first.requests > 0 and second.requests > 0
    assert set(first.names) == set(second.names) == {NAME}


def test_real_https_pin_still_checks_the_certificate_for_the_name(named_tls_server, db,
                                                                 monkeypatch):
    server = named_tls_server("DNS:other.test,IP:127.0.0.1")   # not for the name
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
    report = blast_json(f"https://{NAME}:{server.port}/", "--resolve",
                        f"{NAME}:{server.port}:127.0.0.1", "-n", "3", "-c", "1", db=db,
                        exit_code=1)
    assert report["requests"] == 0 == server.requests
    assert report["error_messages"] == {
        "connect": f"TLS: certificate verify failed: hostname mismatch (127.0.0.1:{server.port})"}


# --------------------------------------------------------------------------- the web app

def test_check_target_returns_the_addresses_it_allowed():
    assert ssrf.check_target("http://127.0.0.1:9/", True) == ["127.0.0.1"]
    assert ssrf.check_target("http://[::1]:9/", True) == ["::1"]
    addresses = ssrf.check_target("http://localhost:9/", True)
    assert addresses[0] == "127.0.0.1" and set(addresses) <= {"127.0.0.1", "::1"}


@pytest.mark.parametrize(("url", "address", "pin"), [
    ("http://localhost:8080/x", "127.0.0.1", "--resolve=localhost:8080:127.0.0.1"),
    ("https://Example.COM/", "2001:db8::1", "--resolve=example.com:443:[2001:db8::1]"),
    ("http://127.0.0.1:8080/", "127.0.0.1", None),
    ("http://[::1]:8080/", "::1", None),
])
def test_the_blast_is_pinned_to_the_address_checked(tmp_path, url, address, pin):
    argv = RunManager(tmp_path / "runs.db").command(
        UUID, validate_start({"url": url, "users": 1, "duration": 1}), address=address)
    assert [arg for arg in argv if arg.startswith("--resolve")] == ([pin] if pin else [])
    assert argv[-2:] == ["--", url]


@pytest.mark.timeout(120)
def test_real_web_run_connects_to_the_address_it_checked(recording_server, tmp_path):
    from test_serve_api import Server
    url_of = {"name": "http://localhost:{port}/", "literal": "http://127.0.0.1:{port}/"}
    server = Server(tmp_path / "runs.db", "--allow-private")
    try:
        for kind, url_format in url_of.items():
            address = ssrf.check_target(url_format.format(port=9), True)[0]
            target, heads = recording_server(host=address)
            url = url_format.format(port=target.port)
            started = server.start(url=url, users=1, duration=2)
            assert started.status == 201, started.body
            run_uuid = started.json["uuid"]
            blasts = server.children()
            assert len(blasts) == 1
            with open(f"/proc/{blasts[0]}/cmdline", "rb") as handle:
                argv = handle.read().decode().split("\0")
            pins = [arg for arg in argv if arg.startswith("--resolve")]
            shown = f"[{address}]" if ":" in address else address
            assert pins == ([f"--resolve=localhost:{target.port}:{shown}"] if kind == "name"
                            else []), argv
            server.wait_status(run_uuid, {"completed"}, 30)
            assert target.requests > 0 and set(header_values(heads, b"Host")) == {url.split("/")[2]}
            assert wait_for(lambda: not server.children(), 10)
    finally:
        server.terminate()


@pytest.mark.parametrize(("message", "shown"), [
    ("connection refused 10.1.2.3:443", "connection refused 10****.3:443"),
    ("connection refused [2001:db8::1]:443", "connection refused [20*********]:443"),
    ("TLS: certificate verify failed: hostname mismatch (10.1.2.3:443)",
     "TLS: certificate verify failed: hostname mismatch (10****.3:443)"),
    ("cannot resolve example.com: Name or service not known",
     "cannot resolve ex*****.com: Name or service not known"),
])
def test_a_masked_run_hides_the_address_it_was_pinned_to(message, shown):
    assert display_text(message, "example.com", True) == shown
    assert display_text(message, "example.com", False) == message

