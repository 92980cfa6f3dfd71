"""loadtester.web in-process: validation, masking, the rate limiter, each middleware, the
per-second series and the JSON API, through Starlette's TestClient against a real ServeContext
and a real SQLite file written with RunWriter.  No blast is ever started here (the /api/start
tests all stop before the spawn: refused by validation, the caps, the SSRF check or shutdown)."""
from __future__ import annotations

import json
import logging
import math
import re
import types

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from conftest import begin_stored_run, wait_for
from loadtester import _engine, store
from loadtester.model import ERROR_KINDS
from loadtester.store import queries
from loadtester.web import ratelimit
from loadtester.web.app import create_app
from loadtester.web.context import ServeContext
from loadtester.reports.display import display_url, mask_host, plain_number, summary_line
from loadtester.web.errors import ApiError
from loadtester.web.middleware import (
    AccessLogMiddleware,
    LoopbackHostMiddleware,
    RequestIdMiddleware,
    SameOriginMiddleware,
    SecurityHeadersMiddleware,
    TokenAuthMiddleware,
)
from loadtester.web.middleware.hosts import host_of
from loadtester.web.ratelimit import RateLimiter
from loadtester.analysis.series import SeriesCache
from loadtester.web.targetauth import AUTH_SHAPES
from loadtester.web.validation import MAX_JSON_BYTES, StartParams, validate_start

UUID4_HEX = re.compile(r"^[0-9a-f]{32}$")
NO_RUN = "00000000-0000-4000-8000-000000000000"


# --------------------------------------------------------------------------- validation

def test_minimal_payload_gets_the_defaults():
    params = validate_start({"url": "  http://example.com/path?q=1  "})
    assert params == StartParams(url="http://example.com/path?q=1", host="example.com", users=10,
                                 duration_s=30.0)
    assert (params.method, params.headers, params.body, params.rate, params.ramp_up_s,
            params.mask_host, params.label) == ("GET", [], None, None, None, False, "")


def test_full_payload_is_normalised():
    params = validate_start({
        "url": "https://api.example.com:8443/v1", "users": 5.0, "duration": "1m", "ramp_up": "10s",
        "rate": "300/m", "method": "post", "headers": {"X-Trace": " abc ", "Accept": "a/b\tc/d"},
        "auth": {"type": "bearer", "token": "tok"}, "body": '{"a": 1}', "mask_host": True,
        "label": "  nightly  "})
    assert params.host == "api.example.com" and params.users == 5 and isinstance(params.users, int)
    assert (params.duration_s, params.ramp_up_s, params.rate) == (60.0, 10.0, 5.0)
    assert params.method == "POST" and params.mask_host is True and params.label == "nightly"
    assert params.headers == [("X-Trace", "abc"), ("Accept", "a/b\tc/d"),
                              ("Authorization", "Bearer tok")]
    assert params.body == '{"a": 1}'


def test_basic_auth_zero_ramp_up_and_empty_body():
    params = validate_start({"url": "http://example.com", "duration": 5, "ramp_up": 0, "body": "",
                             "auth": {"type": "basic", "username": "ann", "password": "pw"}})
    assert params.ramp_up_s is None and params.body is None and params.duration_s == 5.0
    assert params.headers == [("Authorization", "Basic YW5uOnB3")]          # base64("ann:pw")


OK = {"url": "http://example.com/"}

BAD_PAYLOADS = [
    ([1, 2], "the request body must be a JSON object"),
    (None, "the request body must be a JSON object"),
    ({}, "url is required: an http:// or https:// URL"),
    ({"url": "   "}, "url is required: an http:// or https:// URL"),
    ({"url": 42}, "url is required: an http:// or https:// URL"),
    ({"url": "http://example.com/" + "a" * 2100}, "url is longer than 2048 characters"),
    ({"url": "http://exa mple.com/"}, "url must not contain spaces or control characters"),
    ({"url": "http://example.com/\x01"}, "url must not contain spaces or control characters"),
    ({"url": "ftp://example.com/"}, "invalid URL 'ftp://example.com/': scheme must be http or https"),
    ({**OK, "users": 0}, "users must be from 1 to 1000 (got 0)"),
    ({**OK, "users": 1001}, "users must be from 1 to 1000 (got 1001)"),
    ({**OK, "users": 2.5}, "users must be a whole number from 1 to 1000"),
    ({**OK, "users": True}, "users must be a whole number from 1 to 1000"),
    ({**OK, "users": "10"}, "users must be a whole number from 1 to 1000"),
    ({**OK, "duration": 0.5}, "duration must be from 1 to 3600 seconds (got 0.5)"),
    ({**OK, "duration": "2h"}, "duration must be from 1 to 3600 seconds (got 7200)"),
    ({**OK, "duration": True}, "duration must be a number of seconds or a duration such as '30s'"),
    ({**OK, "duration": [30]}, "duration must be a number of seconds or a duration such as '30s'"),
    ({**OK, "duration": math.inf}, "duration must be a finite number"),
    ({**OK, "duration": "abc"}, "invalid duration 'abc': use a number with a unit, e.g. 500ms, 10s, 2m"),
    ({**OK, "ramp_up": -1}, "ramp_up must not be negative"),
    ({**OK, "duration": 10, "ramp_up": 12.5},
     "ramp_up (12.5 s) must not be longer than the duration (10 s)"),
    ({**OK, "rate": True}, "rate must be a number of requests per second"),
    ({**OK, "rate": 0}, "rate must be a number of requests per second above 0"),
    ({**OK, "rate": math.nan}, "rate must be a number of requests per second above 0"),
    ({**OK, "rate": [1]}, "rate must be a number of requests per second above 0"),
    ({**OK, "rate": 100_001}, "rate must be at most 100000 requests per second"),
    ({**OK, "rate": "fast"}, "invalid rate 'fast': use requests per second, e.g. 1000 or 300/m"),
    ({**OK, "method": "TRACE"}, "method must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
    ({**OK, "method": 1}, "method must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
    ({**OK, "headers": ["X-A: 1"]}, "headers must be an object of header name -> value (strings)"),
    ({**OK, "headers": {"X-A": 1}}, "headers must be an object of header name -> value (strings)"),
    ({**OK, "headers": {f"X-{i}": "v" for i in range(65)}}, "at most 64 headers"),
    ({**OK, "headers": {"X-A": "a\r\nX-B: b"}}, "header 'X-A': control characters (CR, LF, NUL, ...) are not allowed in a value"),
    ({**OK, "headers": {"X A": "1"}}, "header 'X A': the name may hold only letters, digits and !#$%&'*+.^_`|~-"),
    ({**OK, "headers": {"X-A": "a\x00b"}}, "header 'X-A': control characters (CR, LF, NUL, ...) are not allowed in a value"),
    ({**OK, "headers": {"X-A": "v" * 8193}}, "header 'X-A' is longer than 8192 characters"),
    ({**OK, "headers": {"Content-Length": "5"}}, "header 'Content-Length' is set by loadtester itself"),
    ({**OK, "headers": {"Transfer-Encoding": "chunked"}},
     "header 'Transfer-Encoding' is set by loadtester itself"),
    ({**OK, "headers": {"X-A": "\u20ac"}}, "header 'X-A': a value must be Latin-1 text (percent-encode or base64 anything else)"),
    ({**OK, "auth": {"type": "digest"}},
     AUTH_SHAPES),
    ({**OK, "auth": "bearer x"},
     AUTH_SHAPES),
    ({**OK, "auth": {"type": "bearer", "token": "t"}, "headers": {"authorization": "Bearer u"}},
     "give either auth or an Authorization header, not both"),
    ({**OK, "auth": {"type": "bearer", "token": ""}},
     "auth.token must be a non-empty string of at most 8192 characters"),
    ({**OK, "auth": {"type": "bearer", "token": "a\nb"}}, "auth.token: control characters (CR, LF, NUL, ...) are not allowed in a value"),
    ({**OK, "auth": {"type": "bearer", "token": "\u20ac"}}, "auth.token: a value must be Latin-1 text (percent-encode or base64 anything else)"),
    ({**OK, "auth": {"type": "basic", "username": "a:b"}},
     "auth.username and auth.password must be strings (no ':' in the username, no control characters)"),
    ({**OK, "auth": {"type": "basic", "username": "a", "password": 3}},
     "auth.username and auth.password must be strings (no ':' in the username, no control characters)"),
    ({**OK, "body": {"a": 1}}, "body must be a string"),
    ({**OK, "body": "x" * ((1 << 20) + 1)}, "body is larger than 1048576 bytes (1 MiB)"),
    ({**OK, "mask_host": "yes"}, "mask_host must be true or false"),
    ({**OK, "label": "x" * 201}, "label must be a string of at most 200 characters, no control characters"),
    ({**OK, "label": "a\x07"}, "label must be a string of at most 200 characters, no control characters"),
    ({**OK, "label": 7}, "label must be a string of at most 200 characters, no control characters"),
]


@pytest.mark.parametrize(("payload", "message"), BAD_PAYLOADS)
def test_bad_payload_is_a_400_with_one_line(payload, message):
    with pytest.raises(ApiError) as info:
        validate_start(payload)
    assert (info.value.status, info.value.message, info.value.headers) == (400, message, {})
    assert "\n" not in info.value.message


# --------------------------------------------------------------------------- masking and display

@pytest.mark.parametrize(("host", "masked"), [
    ("example.com", "ex*****.com"),
    ("api.example.com", "ap*********.com"),
    ("localhost", "lo*******"),
    ("ab", "ab*"),
    ("a.io", "a.**"),                       # the dot too early to keep the last label
    ("10.0.0.1", "10****.1"),
    ("", ""),
    (None, None),
])
def test_mask_host(host, masked):
    assert mask_host(host) == masked


def test_display_url():
    assert display_url("http://example.com:8080/p?q#f", False) == "http://example.com:8080/p?q#f"
    assert display_url("http://example.com:8080/p?q#f", True) == "http://ex*****.com:8080/***?***"
    assert display_url("https://user:pw@example.com/x", False) == "https://example.com/x"
    assert display_url("https://user:pw@example.com/x", True) == "https://ex*****.com/***"
    assert display_url("http://user@[::1]:81/", False) == "http://[::1]:81/"
    assert display_url("http://[::1/", True) == "ht**********"           # unparsable: masked whole
    assert display_url("http://[::1/", False) == "http://[::1/"
    assert display_url(None, True) is None and display_url("", True) == ""


def test_summary_line_and_numbers():
    assert summary_line("example.com", 10, 30, 0.985, 125.321, 45.234) == \
        "Tested example.com with 10 virtual users for 30s - 98.5% success rate, 125.32 RPS, 45.23ms avg latency"
    assert summary_line(None, None, None, None, None, None, running=True) == \
        "Testing ? with ? virtual users for ? - n/a success rate, n/a RPS, n/a avg latency"
    assert summary_line("h", 1, 2.5, 0, 0.0, 0.0) == \
        "Tested h with 1 virtual users for 2.5s - 0.0% success rate, 0.00 RPS, 0.00ms avg latency"
    assert [plain_number(v) for v in (30, 2.5, 0.1 + 0.2, 1e-9, 0, 1e7)] == \
        ["30", "2.5", "0.3", "0", "0", "10000000"]


# --------------------------------------------------------------------------- rate limiter

@pytest.mark.parametrize(("text", "burst", "per_s"), [
    ("10/min", 10, 10 / 60), ("10", 10, 10 / 60), (" 7 / m ", 7, 7 / 60), ("30/h", 30, 30 / 3600),
    ("30/hour", 30, 30 / 3600), ("5/s", 5, 5.0), ("5/sec", 5, 5.0),
])
def test_rate_limit_parse(text, burst, per_s):
    limiter = RateLimiter.parse(text)
    assert limiter is not None and limiter.burst == burst and limiter.per_s == pytest.approx(per_s)


def test_rate_limit_zero_is_off():
    assert RateLimiter.parse("0") is None and RateLimiter.parse("0/h") is None


@pytest.mark.parametrize("text", ["", "abc", "10/day", "-1", "1.5/min", "10/min/s"])
def test_rate_limit_bad_text(text):
    with pytest.raises(ValueError) as info:
        RateLimiter.parse(text)
    assert str(info.value) == f"invalid rate limit {text!r}: use N/min, N/h or 0 (off)"


@pytest.fixture
def clock(monkeypatch):
    """ratelimit's time.monotonic, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_token_bucket_burst_then_refill(clock):
    limiter = RateLimiter.parse("3/min")                       # a token every 20 s
    assert [limiter.take("a") for _ in range(3)] == [(True, 0)] * 3
    assert limiter.take("a") == (False, 20)
    assert limiter.take("b") == (True, 0)                      # a bucket per client
    clock[0] += 5
    assert limiter.take("a") == (False, 15)                    # a quarter of a token back
    clock[0] += 15
    assert limiter.take("a") == (True, 0)
    assert limiter.take("a") == (False, 20)
    clock[0] += 3600                                           # refills only up to the burst
    assert [limiter.take("a")[0] for _ in range(4)] == [True, True, True, False]


def test_token_bucket_wait_is_at_least_a_second(clock):
    limiter = RateLimiter(1, 10.0)                             # 10 tokens a second
    assert limiter.take("a") == (True, 0)
    assert limiter.take("a") == (False, 1)
    clock[0] += 0.1
    assert limiter.take("a") == (True, 0)


def test_token_bucket_forgets_full_buckets(clock):
    limiter = RateLimiter(2, 1.0)
    limiter.MAX_CLIENTS = 3
    for client in ("a", "b", "c"):
        limiter.take(client)
    clock[0] += 10                                             # a, b and c are full again
    limiter.take("d")                                          # 4 buckets: the full ones go
    assert set(limiter._buckets) == {"d"}


# --------------------------------------------------------------------------- each middleware alone

async def _hello(request):
    return PlainTextResponse("hello", headers={"X-Frame-Options": "SAMEORIGIN"})


async def _crash(request):
    raise RuntimeError("boom")


def _tiny_app():
    return Starlette(routes=[Route("/hello", _hello, methods=["GET", "POST"]),
                             Route("/api/hello", _hello), Route("/report/x", _hello),
                             Route("/crash", _crash)])


def test_security_headers_middleware():
    client = TestClient(SecurityHeadersMiddleware(_tiny_app()))
    page = client.get("/hello")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "SAMEORIGIN"             # the app's own is kept
    assert "cache-control" not in page.headers
    assert client.get("/api/hello").headers["cache-control"] == "no-store"
    assert client.get("/api/nothing").headers["cache-control"] == "no-store"   # 404s too


def test_request_id_middleware():
    seen = {}

    async def show(request):
        seen["state"] = request.state.request_id
        return PlainTextResponse("ok")

    client = TestClient(RequestIdMiddleware(Starlette(routes=[Route("/", show)])))
    assert client.get("/", headers={"X-Request-ID": "abc.DEF_1:2-3"}).headers["x-request-id"] == "abc.DEF_1:2-3"
    assert seen["state"] == "abc.DEF_1:2-3"
    for bad in ("has space", "x" * 129, "semi;colon", ""):
        given = client.get("/", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert UUID4_HEX.match(given) and given == seen["state"]
    first, second = (client.get("/").headers["x-request-id"] for _ in range(2))
    assert UUID4_HEX.match(first) and first != second


def _access_lines(caplog):
    return [r.fields for r in caplog.records if r.name == "loadtester.serve" and r.msg == "request"]


def test_access_log_middleware(caplog):
    caplog.set_level(logging.INFO, logger="loadtester.serve")
    client = TestClient(RequestIdMiddleware(AccessLogMiddleware(_tiny_app())),
                        raise_server_exceptions=False)
    client.get("/hello?x=1", headers={"X-Request-ID": "rid-1"})
    client.post("/nothing")
    client.get("/crash")
    lines = _access_lines(caplog)
    assert [(line["method"], line["path"], line["status"], line["request_id"]) for line in lines] == [
        ("GET", "/hello", 200, "rid-1"), ("POST", "/nothing", 404, lines[1]["request_id"]),
        ("GET", "/crash", 500, lines[2]["request_id"])]
    assert all(line["event"] == "request" and line["client"] == "testclient"
               and isinstance(line["ms"], float) for line in lines)
    levels = [r.levelno for r in caplog.records if r.name == "loadtester.serve" and r.msg == "request"]
    assert levels == [logging.INFO, logging.INFO, logging.ERROR]


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1", True), ("127.0.0.1:8080", True), ("localhost", True), ("LOCALHOST:80", True),
    ("[::1]", True), ("[::1]:8080", True), ("::1", True), ("127.0.0.2:8080", True),
    ("example.com", False), ("127.0.0.1.nip.io:80", False), ("[::2]:80", False), ("10.0.0.1", False),
])
def test_loopback_host_middleware(host, allowed):
    client = TestClient(LoopbackHostMiddleware(_tiny_app()))
    response = client.get("/hello", headers={"Host": host})
    if allowed:
        assert response.status_code == 200 and response.text == "hello"
    else:
        assert response.status_code == 421
        assert response.json() == {"error": "this server only answers to 127.0.0.1 / localhost"}


def test_host_of():
    assert [host_of(v) for v in ("Example.COM:80", "[::1]:1", "[::1", "::1", "a")] == \
        ["example.com", "[::1]", "[::1", "::1", "a"]


def test_same_origin_middleware():
    client = TestClient(SameOriginMiddleware(_tiny_app()))
    assert client.post("/hello").status_code == 200                                   # no Origin
    assert client.post("/hello", headers={"Origin": "http://testserver"}).status_code == 200
    assert client.post("/hello", headers={"Origin": "http://TestServer"}).status_code == 200
    assert client.get("/hello", headers={"Origin": "http://evil.example"}).status_code == 200
    for origin in ("http://evil.example", "null", "http://testserver:81"):
        refused = client.post("/hello", headers={"Origin": origin})
        assert refused.status_code == 403 and refused.json() == {"error": "cross-origin request refused"}


def test_token_auth_middleware():
    client = TestClient(TokenAuthMiddleware(_tiny_app(), "s3cret"))
    assert client.get("/hello").status_code == 200                                     # not guarded
    for path in ("/api/hello", "/report/x"):
        refused = client.get(path)
        assert refused.status_code == 401
        assert refused.json() == {"error": "missing or wrong bearer token"}
        assert refused.headers["www-authenticate"] == 'Bearer realm="loadtester"'
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get(path, headers={"Authorization": "bearer  s3cret "}).status_code == 200
        assert client.get(path, headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert client.get(path, params={"access_token": "s3cret"}).status_code == 200
        assert client.get(path, params={"access_token": "wrong"}).status_code == 401
    # ?access_token= is for GET only (links, EventSource)
    assert client.post("/api/hello", params={"access_token": "s3cret"}).status_code == 401


# --------------------------------------------------------------------------- a real app

@pytest.fixture
def make_client(db_path):
    """make_client(**ServeContext fields) -> (TestClient, ServeContext), lifespan running."""
    opened = []

    def make(base_url="http://testserver", **fields):
        ctx = ServeContext(db_path=fields.pop("db", db_path), **fields)
        client = TestClient(create_app(ctx), base_url=base_url)
        client.__enter__()
        opened.append(client)
        return client, ctx

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def test_every_response_carries_the_headers_in_order(make_client):
    client, _ = make_client()
    for path, status in (("/healthz", 200), ("/api/history", 200), ("/nope", 404)):
        response = client.get(path, headers={"X-Request-ID": "req-42"})
        assert response.status_code == status
        names = [k.decode().lower() for k, _ in response.headers.raw]
        added = ["x-request-id", "x-content-type-options", "x-frame-options", "referrer-policy"]
        if path.startswith("/api/"):
            added.append("cache-control")
        assert names[-len(added):] == added
        assert response.headers["x-request-id"] == "req-42"
        assert response.headers["x-frame-options"] == "DENY"


def test_refusals_are_logged_and_carry_the_headers(make_client, caplog):
    caplog.set_level(logging.INFO, logger="loadtester.serve")
    client, _ = make_client(token="t0ken", loopback_only_hosts=True, base_url="http://127.0.0.1")
    refused = client.get("/api/history", headers={"Host": "evil.example", "X-Request-ID": "r1"})
    assert refused.status_code == 421 and refused.headers["x-request-id"] == "r1"
    assert refused.headers["cache-control"] == "no-store"
    # the Host check comes before the Origin check, which comes before the token
    assert client.post("/api/start", headers={"Host": "evil.example", "Origin": "http://x"}).status_code == 421
    assert client.post("/api/start", headers={"Origin": "http://x"}).status_code == 403
    assert client.post("/api/start").status_code == 401
    assert client.get("/api/history", headers={"Authorization": "Bearer t0ken"}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
    assert [(line["path"], line["status"]) for line in _access_lines(caplog)] == [
        ("/api/history", 421), ("/api/start", 421), ("/api/start", 403), ("/api/start", 401),
        ("/api/history", 200), ("/healthz", 200), ("/", 200)]
    assert _access_lines(caplog)[0]["request_id"] == "r1"


def test_no_host_check_unless_bound_to_loopback(make_client):
    client, _ = make_client()
    assert client.get("/healthz", headers={"Host": "example.com"}).status_code == 200


def test_healthz(make_client, tmp_path):
    client, _ = make_client()
    assert client.get("/healthz").json() == {"status": "ok", "db": "ok"}
    missing, _ = make_client(db=tmp_path / "missing.db")
    response = missing.get("/healthz")
    assert response.status_code == 503 and response.json()["status"] == "error"
    assert "missing.db" in response.json()["db"]
    assert missing.get("/api/history").status_code == 503
    assert missing.get("/api/history").json()["error"].startswith("database unavailable: ")


def test_start_body_limit(make_client):
    client, _ = make_client()
    json_type = {"Content-Type": "application/json"}
    message = {"error": f"request body larger than {MAX_JSON_BYTES} bytes"}
    big = b" " * (MAX_JSON_BYTES + 1)
    response = client.post("/api/start", content=big, headers=json_type)              # Content-Length
    assert (response.status_code, response.json()) == (413, message)

    def chunks():                                                                       # chunked: counted
        for _ in range(MAX_JSON_BYTES // 65536 + 1):
            yield b" " * 65536

    response = client.post("/api/start", content=chunks(), headers=json_type)
    assert (response.status_code, response.json()) == (413, message)
    # just under the limit is read (and is then not a JSON object)
    response = client.post("/api/start", content=b" " * (MAX_JSON_BYTES - 4) + b"null", headers=json_type)
    assert (response.status_code, response.json()) == (400, {"error": "the request body must be a JSON object"})


def test_start_refusals_before_any_blast(make_client):
    client, ctx = make_client()
    assert client.post("/api/start", data={"url": "x"}).json() == \
        {"error": "send the test as JSON (Content-Type: application/json)"}
    assert client.post("/api/start", content=b"{nope", headers={"Content-Type": "application/json"}).json() == \
        {"error": "the request body is not valid JSON"}
    bad = client.post("/api/start", json={"url": "http://example.com", "users": 0})
    assert (bad.status_code, bad.json()) == (400, {"error": "users must be from 1 to 1000 (got 0)"})
    refused = client.post("/api/start", json={"url": "http://127.0.0.1:9/"})
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("target 127.0.0.1 is a loopback address; refused")
    assert ctx.manager.runs == {}


def test_start_caps_and_shutdown(make_client):
    target = {"url": "http://127.0.0.1:9/"}
    client, ctx = make_client(max_running=0, allow_private=True)
    capped = client.post("/api/start", json=target)
    assert capped.status_code == 429 and capped.headers["retry-after"] == "5"
    assert capped.json() == {"error": "the server is running 0 tests, its limit; try again later"}
    client, ctx = make_client(max_per_client=0, allow_private=True)
    assert client.post("/api/start", json=target).json() == \
        {"error": "testclient already has 0 tests running (at most 0 at a time); stop one or wait"}
    client, ctx = make_client(allow_private=True)
    ctx.manager.shutting_down = True
    closing = client.post("/api/start", json=target)
    assert (closing.status_code, closing.json()) == (503, {"error": "the server is shutting down"})
    assert ctx.manager.runs == {}


def test_start_rate_limit(make_client):
    client, _ = make_client(limiter=RateLimiter.parse("1/min"))
    first = client.post("/api/start", json={"url": "ftp://x"})          # takes the only token
    assert first.status_code == 400
    second = client.post("/api/start", json={"url": "ftp://x"})
    assert second.status_code == 429 and second.headers["retry-after"] == "60"
    assert second.json() == {"error": "too many tests started from testclient: at most 1 in a row, "
                                      "then 1 a minute; retry in 60 s"}


def test_errors_are_json(make_client):
    client, _ = make_client()
    assert (client.get("/nope").status_code, client.get("/nope").json()) == (404, {"error": "not found"})
    assert client.get("/api/start").json() == {"error": "method not allowed"}
    assert client.get("/api/status/nope").json() == {"error": "no run 'nope'"}
    assert client.get(f"/api/status/{NO_RUN.upper()}").json() == {"error": f"no run {NO_RUN}"}
    assert client.get(f"/api/metrics/{NO_RUN}").status_code == 404
    assert client.get(f"/report/{NO_RUN}").status_code == 404
    assert client.get("/test/nope").status_code == 404
    assert client.post(f"/api/stop/{NO_RUN}").status_code == 404
    assert client.get("/api/history?page=0").json() == {"error": "page must be from 1 to 1000000"}
    assert client.get("/api/history?per_page=x").json() == {"error": "per_page must be a whole number"}
    assert client.get("/api/compare?a=" + NO_RUN).json() == {"error": "give two runs: /api/compare?a=UUID&b=UUID"}
    assert client.get(f"/api/stream/{NO_RUN}?since=-1").status_code == 400


def test_pages(make_client, tmp_path):
    client, _ = make_client()
    index = client.get("/")
    assert index.status_code == 200 and index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.headers["cache-control"] == "no-cache"
    missing = client.get(f"/test/{NO_RUN}")
    assert missing.status_code == 404 and "<h1>Run not found</h1>" in missing.text
    assert client.get("/test/not-a-uuid").status_code == 404
    assert client.get("/compare?a=x&b=y").status_code == 200
    guarded, _ = make_client(token="s3cret")          # behind a token: no existence oracle
    assert guarded.get(f"/test/{NO_RUN}").status_code == 200
    bare, _ = make_client(web_dir=tmp_path / "no-ui")
    fallback = bare.get("/")
    assert fallback.status_code == 200 and "The web UI is not installed here (no index.html)" in fallback.text


# --------------------------------------------------------------------------- series and the API, from a real file

def _hist(*values_us):
    hist = _engine.Histogram()
    for value in values_us:
        hist.record_value(value)
    return hist.to_bytes()


def _window(second, worker, responses, successes, latencies_us, connect_errors=0):
    errors = [0] * len(ERROR_KINDS)
    errors[ERROR_KINDS.index("connect")] = connect_errors
    return {"second": second, "worker": worker,
            "counters": {"responses": responses, "successes": successes, "bytes": 100 * responses,
                         "errors": errors, "status": {200: successes, 500: responses - successes},
                         "max_wait_us": 0},
            "latency": _hist(*latencies_us), "service": _hist(*latencies_us), "loop_lag_us": 250,
            "in_flight": 1, "partial": False}


def _begin(db_path, **extra):
    return begin_stored_run(db_path, **{"total_users": 4, "workers": 2, "duration": 3.0, **extra})


def _write_completed(db_path, **extra):
    """A finished 3 s run of two workers; second 1 has a 500 and a connect error."""
    writer = _begin(db_path, **extra)
    for second in range(3):
        writer.submit_window(_window(second, 0, 10, 10, [1000] * 10))
        writer.submit_window(_window(second, 1, 10, 9 if second == 1 else 10, [3000] * 10,
                                     connect_errors=1 if second == 1 else 0))
    writer.finish({"total_requests": 61, "success_count": 59, "error_count": 2, "rps": 20.0,
                   "avg_latency": 2.0, "p99": 3.0, "measured_duration": 3.0, "stop_reason": "duration"})
    return writer.uuid, writer.run_id


def test_series_rows_from_a_finished_run(db_path):
    run_uuid, run_id = _write_completed(db_path)
    conn = store.open_database(db_path, readonly=True)
    try:
        row = queries.run_summary(conn, run_uuid)
        snapshot = SeriesCache().get(conn, row)
    finally:
        conn.close()
    assert [r["second"] for r in snapshot.rows] == [1, 2, 3] and snapshot.closed == snapshot.rows
    first, middle = snapshot.rows[0], snapshot.rows[1]
    assert (first["rps"], first["requests"], first["errors"], first["success_rate"]) == (20, 20, 0, 1.0)
    assert (middle["rps"], middle["requests"], middle["errors"]) == (20, 21, 2)
    assert middle["success_rate"] == pytest.approx(19 / 21)
    assert first["p50_ms"] == pytest.approx(1.0, rel=0.01) and first["p99_ms"] == pytest.approx(3.0, rel=0.01)
    assert first["max_ms"] == pytest.approx(3.0, rel=0.01) and set(first) == {
        "second", "rps", "requests", "errors", "success_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms",
        "avg_ms", "in_flight", "status_codes", "error_kinds"}
    # what the run page draws besides: requests in flight (each worker stored 1), the second's
    # status codes and transport errors
    assert (first["in_flight"], first["status_codes"], first["error_kinds"]) == (2, {"200": 20}, {})
    assert (middle["status_codes"], middle["error_kinds"]) == ({"200": 19, "500": 1}, {"connect": 1, "status": 1})
    assert first["avg_ms"] == pytest.approx(2.0, rel=0.01)              # (10 x 1 ms + 10 x 3 ms) / 20
    assert snapshot.totals.requests == 61 and snapshot.totals.counters.successes == 59
    assert snapshot.totals.latency.total == 60


def test_series_of_a_running_run_closes_seconds_as_workers_store_them(db_path):
    writer = _begin(db_path)
    cache = SeriesCache()

    def snapshot_when(stored_windows):
        conn = store.open_database(db_path, readonly=True)
        try:
            assert wait_for(lambda: len(queries.run_windows(conn, writer.run_id)) == stored_windows,
                            timeout_s=10, interval_s=0.02)
            return cache.get(conn, queries.run_summary(conn, writer.uuid))
        finally:
            conn.close()

    try:
        writer.submit_window(_window(0, 0, 5, 5, [1000] * 5))
        writer.submit_window(_window(0, 1, 5, 5, [1000] * 5))
        writer.submit_window(_window(1, 0, 7, 7, [2000] * 7))              # worker 1 not yet
        snap = snapshot_when(3)
        assert [r["second"] for r in snap.closed] == [1]
        assert [(r["second"], r["rps"]) for r in snap.rows] == [(1, 10), (2, 7)]
        assert snap.totals.requests == 17
        writer.submit_window(_window(1, 1, 3, 3, [2000] * 3))
        snap = snapshot_when(4)
        assert [(r["second"], r["rps"]) for r in snap.closed] == [(1, 10), (2, 10)]
        assert snap.rows == snap.closed and snap.totals.requests == 20
    finally:
        writer.finish({}, status="stopped")


def test_web_queries(db_path):
    done_uuid, done_id = _write_completed(db_path, label="done")
    writer = _begin(db_path, label="live")
    try:
        conn = store.open_database(db_path, readonly=True)
        try:
            assert queries.count_runs(conn) == 2
            summary = queries.run_summary(conn, done_uuid)
            assert summary["id"] == done_id and summary["status"] == "completed" and "latency_hist" not in summary
            assert queries.run_summary(conn, done_uuid[:8]) is None               # exact uuids only
            assert queries.run_by_uuid(conn, done_uuid[:8]) is None
            assert "latency_hist" in queries.run_by_uuid(conn, done_uuid)
            assert [r["uuid"] for r in queries.running_runs(conn)] == [writer.uuid]
            assert [r["label"] for r in queries.runs_page(conn, limit=5, offset=0)] == ["live", "done"]
            assert [r["label"] for r in queries.runs_page(conn, limit=1, offset=1)] == ["done"]
        finally:
            conn.close()
    finally:
        writer.finish({}, status="stopped")


def test_api_reads_a_finished_run(make_client, db_path):
    run_uuid, run_id = _write_completed(db_path, label="nightly", mask_host=True)
    client, _ = make_client()
    status = client.get(f"/api/status/{run_uuid}").json()
    assert (status["uuid"], status["id"], status["status"], status["progress"], status["remaining_s"]) == \
        (run_uuid, run_id, "completed", 1.0, 0.0)
    assert status["url"] == "http://ex*****.com:8080/***" and status["mask_host"] is True
    assert status["summary"] == ("Tested ex*****.com with 4 virtual users for 3s - 96.7% success rate, "
                                 "20.00 RPS, 2.00ms avg latency")
    series = client.get(f"/api/timeseries/{run_uuid}").json()
    assert series["status"] == "completed" and [s["second"] for s in series["seconds"]] == [1, 2, 3]
    metrics = client.get(f"/api/metrics/{run_uuid}").json()
    assert metrics["live"] is False and metrics["seconds_recorded"] == 3 and "db" not in metrics
    assert "example.com" not in json.dumps(metrics)
    history = client.get("/api/history?per_page=1").json()
    assert (history["total"], history["page"], history["per_page"]) == (1, 1, 1)
    assert history["runs"][0]["summary"] == status["summary"]
    assert history["runs"][0]["label"] == "nightly" and history["runs"][0]["success_rate"] == pytest.approx(59 / 61)
    assert client.get("/api/running").json() == []
    stop = client.post(f"/api/stop/{run_uuid}")
    assert (stop.status_code, stop.json()) == (409, {"error": f"run {run_uuid} is not running (status completed)"})
    html = client.get(f"/report/{run_uuid}")
    assert html.status_code == 200 and "frame-ancestors 'none'" in html.headers["content-security-policy"]
    assert "nightly" in html.text and "example.com" not in html.text
    compared = client.get(f"/api/compare?a={run_uuid}&b={run_uuid}")
    assert compared.status_code == 200 and compared.json()["a"]["url"] == "http://ex*****.com:8080/***"


def test_api_stream_of_a_finished_run(make_client, db_path):
    run_uuid, _ = _write_completed(db_path)
    client, _ = make_client()
    with client.stream("GET", f"/api/stream/{run_uuid}", headers={"Last-Event-ID": "1"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"           # its own, not no-store
        text = "".join(response.iter_text())
    events = [block for block in text.split("\n\n") if block]
    assert events[0] == "retry: 2000"
    assert [e.splitlines()[0] for e in events[1:3]] == ["id: 2", "id: 3"]
    window = json.loads(events[1].splitlines()[2].removeprefix("data: "))
    assert window["second"] == 2 and window["uuid"] == run_uuid and window["status"] == "completed"
    assert events[3].startswith("event: done\n")


def test_api_sees_a_run_stored_by_another_process(make_client, db_path):
    writer = _begin(db_path, label="elsewhere")
    try:
        client, _ = make_client()
        running = client.get("/api/running").json()
        assert [(r["uuid"], r["status"], r["label"]) for r in running] == [(writer.uuid, "running", "elsewhere")]
        assert set(running[0]) == {"uuid", "id", "url", "label", "users", "duration", "elapsed_s",
                                   "remaining_s", "progress", "status", "result", "started_at",
                                   "rps_last_second"}
        assert running[0]["result"] is None                             # no verdict while it runs
        assert running[0]["rps_last_second"] is None                    # no second stored yet
        writer.submit_window(_window(0, 0, 5, 5, [1000] * 5))
        writer.submit_window(_window(0, 1, 6, 6, [1000] * 6))
        assert wait_for(lambda: client.get("/api/running").json()[0]["rps_last_second"] == 11, 5)
        stop = client.post(f"/api/stop/{writer.uuid}")
        assert stop.status_code == 409
        assert stop.json()["error"] == f"run {writer.uuid} was not started by this server; stop it where it runs"
        metrics = client.get(f"/api/metrics/{writer.uuid}").json()
        assert metrics["live"] is True and metrics["requests_so_far"] == 11
    finally:
        writer.finish({}, status="stopped")


# --------------------------------------------------------------------------- issue 13: the app's reads and actions

def test_history_search_and_sort(make_client, db_path):
    _write_completed(db_path, label="before cache", total_users=2)
    _write_completed(db_path, label="after cache", total_users=8, url="http://other.example/y")
    _write_completed(db_path, label="masked", host="secret.internal", url="http://secret.internal/z",
                     mask_host=1)
    client, _ = make_client()
    labels = lambda **q: [r["label"] for r in client.get("/api/history", params=q).json()["runs"]]  # noqa: E731
    assert labels() == ["masked", "after cache", "before cache"]
    assert labels(q="CACHE") == ["after cache", "before cache"]                 # any case
    assert labels(q="other.example") == ["after cache"]                        # the URL too
    assert labels(q="secret") == []                  # a masked run's URL is not searched
    assert labels(q="%") == [] and labels(q="_") == []                          # literal, not LIKE
    assert labels(sort="users")[0] == "after cache"
    assert labels(sort="oldest") == ["before cache", "after cache", "masked"]
    page = client.get("/api/history", params={"q": "cache", "per_page": 1}).json()
    assert (page["total"], page["search"], page["sort"]) == (2, "cache", "newest")
    entry = page["runs"][0]
    assert (entry["mode"], entry["errors"], entry["measured_duration"]) == ("closed", 2, 3.0)
    for bad, message in (({"sort": "nope"}, "sort must be one of"), ({"q": "x" * 201}, "at most 200")):
        response = client.get("/api/history", params=bad)
        assert response.status_code == 400 and message in response.json()["error"]


def test_status_has_the_settings_and_the_previous_run(make_client, db_path):
    first, _ = _write_completed(db_path, label="first")
    _write_completed(db_path, label="elsewhere", url="http://other.example/")
    second, _ = _write_completed(db_path, label="second", mode="rate", rate=250.0, ramp_up_sec=2.0,
                                 config=json.dumps({"timeout_s": 7.5, "pipeline": 1}))
    client, _ = make_client()
    status = client.get(f"/api/status/{second}").json()
    assert status["settings"] == {
        "mode": "rate", "rate": 250.0, "connections": 4, "ramp_up_s": 2.0, "method": "GET",
        "planned_duration_s": 3.0, "actual_duration_s": 3.0, "requests_limit": None, "timeout_s": 7.5,
        "insecure": False, "pipeline": 1, "workers": 2, "body": None, "stop_reason": "duration", "started_at": status["started_at"],
        "completed_at": status["completed_at"], "traffic": None}
    assert status["previous_uuid"] == first                    # the one before against the same URL
    assert client.get(f"/api/status/{first}").json()["previous_uuid"] is None


def test_metrics_have_p95_and_the_latency_distribution(make_client, db_path):
    run_uuid, _ = _write_completed(db_path)
    client, _ = make_client()
    metrics = client.get(f"/api/metrics/{run_uuid}").json()
    assert metrics["latency_ms"]["p95"] == metrics["p95"]
    curve = metrics["latency_distribution"]
    assert [p["percentile"] for p in curve][:3] == [0.0, pytest.approx(20.567, abs=0.01),
                                                    pytest.approx(36.904, abs=0.01)]
    assert curve[-1]["percentile"] == 100.0
    assert [p["ms"] for p in curve] == sorted(p["ms"] for p in curve)       # never goes down
    assert curve[0]["ms"] == pytest.approx(1.0, rel=0.01) and curve[-1]["ms"] == pytest.approx(3.0, rel=0.01)


def test_export_endpoint(make_client, db_path):
    run_uuid, run_id = _write_completed(db_path)
    client, _ = make_client()
    csv_text = client.get(f"/api/export/{run_uuid}").text
    lines = csv_text.split("\r\n")
    assert lines[0].startswith("second,requests,successes,errors,bytes,") and len(lines) == 5   # 3 rows + ""
    ndjson = client.get(f"/api/export/{run_uuid}?format=ndjson")
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in ndjson.text.splitlines()]
    assert [r["requests"] for r in rows] == [20, 21, 20]
    document = client.get(f"/api/export/{run_uuid}?format=json")
    assert document.headers["content-disposition"] == f"attachment; filename=loadtest-{run_uuid[:8]}.json"
    assert document.json()["rows"] == rows and document.json()["run"]["run_id"] == run_id
    assert client.get(f"/api/export/{run_uuid}?format=xml").status_code == 400
    assert client.get(f"/api/export/{NO_RUN}").status_code == 404
    # the latency spectrum, as `loadtester export --format hgrm` writes it
    # (this run stored no whole-run histogram: it comes from its windows, 30 x 1 ms, 30 x 3 ms)
    from loadtester.analysis.export import render_hgrm
    hgrm = client.get(f"/api/export/{run_uuid}?format=hgrm")
    assert hgrm.status_code == 200 and hgrm.headers["content-type"].startswith("text/plain")
    expected = _engine.Histogram()
    for value in [1000] * 30 + [3000] * 30:
        expected.record_value(value)
    assert hgrm.text == render_hgrm(expected)
    assert hgrm.text.splitlines()[-2] == "#[Max     =        3.000, Total count    =           60]"


def test_delete_endpoint(make_client, db_path):
    run_uuid, _ = _write_completed(db_path)
    kept, _ = _write_completed(db_path)
    live = _begin(db_path, label="live")
    client, _ = make_client()
    try:
        assert client.delete(f"/api/runs/{live.uuid}").status_code == 409       # stop it first
        response = client.delete(f"/api/runs/{run_uuid}")
        assert response.status_code == 200 and response.json() == {"uuid": run_uuid, "status": "deleted"}
        assert client.get(f"/api/status/{run_uuid}").status_code == 404
        assert client.get(f"/test/{run_uuid}").status_code == 404
        assert client.delete(f"/api/runs/{run_uuid}").status_code == 404
        assert client.delete(f"/api/runs/{NO_RUN}").status_code == 404
        assert client.get(f"/api/status/{kept}").status_code == 200
        conn = store.open_database(db_path, readonly=True)
        try:                                            # its windows went with it
            assert conn.execute("SELECT count(*) FROM metric_windows").fetchall()[0][0] == 6
        finally:
            conn.close()
        foreign = client.delete(f"/api/runs/{kept}", headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403                # unsafe method, foreign origin
    finally:
        live.finish({}, status="stopped")


def test_run_progress_is_by_the_clock_for_a_duration_and_by_attempts_for_a_count():
    from loadtester.web.api import run_progress
    assert run_progress({"duration": 10, "requests_limit": None}, None, 2.5) == 0.25
    assert run_progress({"duration": 10}, None, 30.0) == 1.0
    # -n 1000 with 250 attempts stored so far (errors included): a quarter, whatever the clock
    assert run_progress({"duration": None, "requests_limit": 1000, "total_requests": 250},
                        None, 99.0) == 0.25
    assert run_progress({"duration": None, "requests_limit": None}, None, 5.0) == 0.0


def test_compare_marks_a_setting_different_only_when_it_reads_different():
    from loadtester.web.api import settings_diff
    base = {"status": "completed", "total_users": 4, "duration": 0.3, "method": "GET"}
    rows = {key: row for key, row in (("a", {**base, "measured_duration": 0.3012}),
                                      ("b", {**base, "measured_duration": 0.2991}))}
    diff = {s["key"]: s for s in settings_diff(rows["a"], rows["b"], "http://x/", "http://x/")}
    assert not diff["actual_duration_s"]["differs"]               # both read "0.3"
    rows["b"]["total_users"] = 8
    diff = {s["key"]: s for s in settings_diff(rows["a"], rows["b"], "http://x/", "http://x/")}
    assert diff["connections"]["differs"]
    # the body: not kept, its size and sha256 are (spec.config), and tell the runs apart
    rows["a"]["config"] = json.dumps({"body_bytes": 1234, "body_sha256": "ab" * 32})
    rows["b"]["config"] = json.dumps({"body_bytes": 1234, "body_sha256": "cd" * 32})
    diff = {s["key"]: s for s in settings_diff(rows["a"], rows["b"], "http://x/", "http://x/")}
    assert (diff["body"]["a"], diff["body"]["differs"]) == ("1,234 B, sha256 abababababab", True)
    rows["b"]["config"] = json.dumps({"body_bytes": 0, "body_sha256": None})
    diff = {s["key"]: s for s in settings_diff(rows["a"], rows["b"], "http://x/", "http://x/")}
    assert diff["body"]["b"] is None and diff["body"]["differs"]
