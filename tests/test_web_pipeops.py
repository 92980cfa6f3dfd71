"""The web app's verdicts, thresholds, circuit breaker and its drop-in for clients of the
original PipeOps app: run results (passed / failed / no thresholds) in every payload,
`thresholds` and `abort_on_error_rate` on POST /api/start, the original's request body and
response fields, and a deeply nested body (400, not 500).

In-process tests use Starlette's TestClient with real SQLite files written by RunWriter (no
blast is started: the /api/start calls here are all refused before the spawn); the tests
marked slow run a real `loadtester serve` and real blasts against `loadtester target`."""
from __future__ import annotations

import json
import re

import pytest
from starlette.testclient import TestClient

from conftest import TargetProcess, cli, free_port
from loadtester import _engine, store
from loadtester.model import ERROR_KINDS
from loadtester.store import RunWriter, queries
from loadtester.web import pipeops
from loadtester.web.app import create_app
from loadtester.web.context import ServeContext
from loadtester.web.errors import ApiError
from loadtester.web.runs import RunManager
from loadtester.web.validation import MAX_JSON_DEPTH, START_FIELDS, StartParams, validate_start
from loadtester.analysis.verdict import judge

# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(("run", "successes", "result", "reason"), [
    ({"status": "running"}, 0, None, None),
    ({"status": "completed"}, 10, "no thresholds", None),
    ({"status": "stopped", "stop_reason": "stopped"}, 10, "no thresholds", None),
    ({"status": "interrupted"}, 3, "no thresholds", None),
    ({"status": "completed", "thresholds": json.dumps([{"expression": "p99<1s", "passed": True}])},
     10, "passed", None),
    ({"status": "completed", "thresholds": json.dumps([{"expression": "p99<1s", "passed": True},
                                                       {"expression": "rps>9", "passed": False}])},
     10, "failed", "threshold not met: rps>9"),
    ({"status": "completed", "errors_by_kind": '{"connect": 2466}',
      "error_messages": '{"connect": "connection refused 127.0.0.1:18119"}'}, 0, "failed",
     "no successful response: connect 2,466 (first connect error: connection refused 127.0.0.1:18119)"),
    ({"status": "completed"}, None, "failed", "no successful response"),
    ({"status": "stopped", "stop_reason": "aborted"}, 5, "failed",
     "stopped by the error-rate circuit breaker"),
    ({"status": "failed", "worker_errors": '["worker 1 was killed by SIGKILL in second 3"]'}, 50,
     "failed", "the run failed: worker 1 was killed by SIGKILL in second 3"),
    ({"status": "failed"}, 50, "failed", "the run failed: the run failed"),
])
def test_judge(run, successes, result, reason):
    verdict = judge(run, successes)
    assert (verdict.result, verdict.reason) == (result, reason)


def test_judge_of_a_blast_that_never_stored_a_row():
    assert judge({"status": "failed"}, 0, "loadtester: no response at all").reason == \
        "the run failed: loadtester: no response at all"


# --------------------------------------------------------------------------- validation

OK = {"url": "http://example.com/"}


def test_thresholds_and_circuit_breaker_are_parsed_in_the_cli_grammar():
    params = validate_start({**OK, "thresholds": ["P99 < 200ms", "errors<1%", "rps>=1000",
                                                  "p99<200ms"], "abort_on_error_rate": "50%"})
    assert params.thresholds == ["p99<200ms", "errors<1%", "rps>=1000"]     # canonical, deduplicated
    assert params.abort_on_error_rate == 0.5
    for given, share in ((0.25, 0.25), (1, 1.0), ("0.1", 0.1), ("12.5%", 0.125), (None, None)):
        assert validate_start({**OK, "abort_on_error_rate": given}).abort_on_error_rate == share
    assert validate_start(OK).thresholds == [] and validate_start(OK).abort_on_error_rate is None


SHARE_ERROR = ("abort_on_error_rate must be a share of requests above 0 and at most 1 (0.5) or a "
               "percentage ('50%')")


@pytest.mark.parametrize(("payload", "message"), [
    ({**OK, "thresholds": "p99<200ms"}, 'thresholds must be a list of strings such as ["p99<200ms", "errors<1%"]'),
    ({**OK, "thresholds": [200]}, 'thresholds must be a list of strings such as ["p99<200ms", "errors<1%"]'),
    ({**OK, "thresholds": ["p99<1s"] * 21}, "at most 20 thresholds"),
    ({**OK, "thresholds": ["p99<" + "1" * 100]}, "a threshold is at most 100 characters, no control characters"),
    # the CLI's grammar, the CLI's message (`blast --threshold p42<300ms`)
    ({**OK, "thresholds": ["p42<300ms"]},
     "invalid threshold 'p42<300ms': unknown metric 'p42' (use one of p50, p75, p90, p95, p99, p99.9, "
     "avg, min, max, stdev, errors, success, rps)"),
    ({**OK, "thresholds": ["fast"]}, "invalid threshold 'fast': write METRIC OP VALUE, e.g. p99<200ms, "
     "errors<1%, rps>=1000 (metrics: p50, p75, p90, p95, p99, p99.9, avg, min, max, stdev, errors, "
     "success, rps; operators: < <= > >=)"),
    ({**OK, "thresholds": ["success>99"]}, "invalid threshold 'success>99': success takes a percentage, "
     "e.g. success>99%"),
    ({**OK, "abort_on_error_rate": 0}, SHARE_ERROR),
    ({**OK, "abort_on_error_rate": 50}, SHARE_ERROR),
    ({**OK, "abort_on_error_rate": "150%"}, SHARE_ERROR),
    ({**OK, "abort_on_error_rate": "half"}, SHARE_ERROR),
    ({**OK, "abort_on_error_rate": True}, SHARE_ERROR),
    ({**OK, "abort_on_error_rate": 1e-12}, SHARE_ERROR),
    ({**OK, "abort_on_error_rate": [0.5]}, SHARE_ERROR),
    ({**OK, "colour": "blue"}, f"unknown field 'colour'; the fields are {', '.join(START_FIELDS)}"),
    ({**OK, "ramp_up_sec": 5}, "unknown field 'ramp_up_sec' (with url, this API calls it ramp_up; the "
     f"original PipeOps body uses host instead of url); the fields are {', '.join(START_FIELDS)}"),
    ({**OK, "host": "example.com"}, "give url (this API) or host (the original PipeOps body), not both"),
    ({"host": "example.com"}, "unknown field 'host' (with url, this API calls it url; the original "
     f"PipeOps body uses host instead of url); the fields are {', '.join(START_FIELDS)}"),
    ({**OK, "auth": {"type": "jwt", "token": "t", "extra": 1}},
     "unknown field auth.extra for a jwt auth (fields: token, type)"),
    ({**OK, "auth": {"type": "header"}}, "a header auth needs header_name and header_value (or headers)"),
    ({**OK, "auth": {"type": "header", "header_name": "X-Key"}},
     "auth.header_name and auth.header_value must be strings (a header name and its value)"),
    ({**OK, "auth": {"type": "header", "header_name": "X Key", "header_value": "v"}},
     "header 'X Key': the name may hold only letters, digits and !#$%&'*+.^_`|~-"),
    ({**OK, "auth": {"type": "header", "header_name": "X-Key", "header_value": "v"},
      "headers": {"x-key": "w"}}, "header 'X-Key' is given both in headers and in auth"),
    ({**OK, "auth": {"type": "header", "header_name": "X-Key", "header_value": "v", "headers": [1]}},
     "auth.headers must be an object of header name -> value (strings)"),
    ({**OK, "auth": {"type": "jwt", "token": "t"}, "headers": {"Authorization": "x"}},
     "give either auth or an Authorization header, not both"),
    ({**OK, "label": {"a": json.loads("[" * 18 + '"deep"' + "]" * 18)}},
     f"the request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"),
])
def test_bad_start_fields_are_a_400_with_one_line(payload, message):
    with pytest.raises(ApiError) as info:
        validate_start(payload)
    assert (info.value.status, info.value.message) == (400, message)
    assert "\n" not in info.value.message


def test_auth_types_of_the_original():
    jwt = validate_start({**OK, "auth": {"type": "jwt", "token": "abc"}})
    assert jwt.headers == [("Authorization", "Bearer abc")]
    custom = validate_start({**OK, "headers": {"X-Trace": "1"},
                             "auth": {"type": "header", "header_name": "X-Api-Key", "header_value": " k ",
                                      "headers": {"X-Tenant": "t1"}}})
    assert custom.headers == [("X-Trace", "1"), ("X-Api-Key", "k"), ("X-Tenant", "t1")]
    short = validate_start({**OK, "auth": {"type": "header", "name": "X-Api-Key", "value": "k"}})
    assert short.headers == [("X-Api-Key", "k")]


def test_blast_command_line_carries_thresholds_and_the_circuit_breaker(tmp_path):
    manager = RunManager(tmp_path / "runs.db")
    params = StartParams(url="http://127.0.0.1:9/", host="127.0.0.1", users=2, duration_s=5,
                         thresholds=["p99<200ms", "errors<1%"], abort_on_error_rate=0.125)
    argv = manager.command("00000000-0000-4000-8000-000000000001", params)
    assert argv[argv.index("--") - 3:argv.index("--")] == [
        "--threshold=p99<200ms", "--threshold=errors<1%", "--abort-on-error-rate=12.5%"]
    plain = manager.command("00000000-0000-4000-8000-000000000001",
                            StartParams(url="http://127.0.0.1:9/", host="127.0.0.1", users=2,
                                        duration_s=5))
    assert not any(a.startswith(("--threshold", "--abort-on-error-rate")) for a in plain)


# --------------------------------------------------------------------------- the original body

@pytest.mark.parametrize(("host", "url"), [
    ("example.com", "https://example.com"),               # the original: https for public names
    ("example.com:8080", "http://example.com:8080"),      # host:port: http
    ("localhost", "http://localhost"),
    ("127.0.0.1", "http://127.0.0.1"),
    ("10.1.2.3/health", "http://10.1.2.3/health"),
    ("192.168.1.5", "http://192.168.1.5"),
    (" https://api.example.com/v1 ", "https://api.example.com/v1"),
    ("HTTP://example.com/", "HTTP://example.com/"),
])
def test_normalize_host_as_the_original(host, url):
    assert pipeops.normalize_host(host) == url


def test_original_body_translates_field_by_field():
    body = pipeops.translate({
        "host": "127.0.0.1:8080", "mask_host": True, "users": 20, "ramp_up_sec": 5, "duration": 60,
        "auth": {"type": "jwt", "token": "t"}, "method": "post", "body": "{}",
        "headers": {"X-A": "1"}, "max_concurrent_requests": 5, "error_threshold": 25,
        "label": "from-pipeops", "thresholds": ["p99<1s"]})
    assert body == {"url": "http://127.0.0.1:8080", "mask_host": True, "users": 20, "ramp_up": 5,
                    "duration": 60, "auth": {"type": "jwt", "token": "t"}, "method": "post",
                    "body": "{}", "headers": {"X-A": "1"}, "rate": 100.0,
                    "abort_on_error_rate": 0.25, "label": "from-pipeops", "thresholds": ["p99<1s"]}
    params = validate_start(body)
    assert (params.url, params.users, params.ramp_up_s, params.duration_s, params.rate) == \
        ("http://127.0.0.1:8080", 20, 5.0, 60.0, 100.0)
    assert params.abort_on_error_rate == 0.25 and params.mask_host is True
    assert params.headers == [("X-A", "1"), ("Authorization", "Bearer t")]
    # the original's defaults: 10 requests per second per user, no circuit breaker
    minimal = pipeops.translate({"host": "example.com", "users": 3, "duration": 10})
    assert minimal == {"url": "https://example.com", "users": 3, "duration": 10, "rate": 30.0}
    assert pipeops.translate({"host": "h:1", "max_concurrent_requests": 0, "error_threshold": 0,
                              "ramp_up_sec": 0})["rate"] == 100.0          # 10 users (our default) x 10
    assert pipeops.translate({"host": "h:1", "error_threshold": "12.5%"})["abort_on_error_rate"] == 0.125


@pytest.mark.parametrize(("payload", "message"), [
    ({"host": "h:1", "users": 2, "max_users": 3},
     "unknown field 'max_users' in a PipeOps-style body (one with host); its fields are host, mask_host, "
     "users, ramp_up_sec, duration, auth, method, body, headers, max_concurrent_requests, error_threshold, "
     "label, thresholds"),
    ({"host": "h:1", "ramp_up": 3}, "unknown field 'ramp_up' in a PipeOps-style body"),
    ({"host": ""}, "host is required: a host name, host:port or an http(s):// URL"),
    ({"host": 42}, "host is required: a host name, host:port or an http(s):// URL"),
    ({"host": "h:1", "max_concurrent_requests": 101},
     "max_concurrent_requests must be a number of requests per second per user from 1 to 100 (0 or "
     "absent: 10)"),
    ({"host": "h:1", "max_concurrent_requests": -1}, "max_concurrent_requests must be"),
    ({"host": "h:1", "max_concurrent_requests": "5"}, "max_concurrent_requests must be"),
    ({"host": "h:1", "error_threshold": 150},
     "error_threshold must be a percentage of failed requests above 0 and at most 100 (50 or '50%'), or "
     "0 for no circuit breaker"),
    ({"host": "h:1", "error_threshold": -5}, "error_threshold must be a percentage"),
    ({"host": "h:1", "error_threshold": "lots%"}, "error_threshold must be a percentage"),
    ({"host": "h:1", "error_threshold": "0.5"}, "error_threshold must be a percentage"),
    ({"host": "h:1", "error_threshold": True}, "error_threshold must be a percentage"),
    ({"host": "h:1", "users": 0}, "users must be from 1 to 1000 (got 0)"),
])
def test_bad_original_body_is_a_400(payload, message):
    with pytest.raises(ApiError) as info:
        validate_start(pipeops.translate(payload))
    assert info.value.status == 400 and info.value.message.startswith(message), info.value.message


def test_the_original_timeseries_shape():
    rows = [{"second": 1, "requests": 12, "rps": 10, "success_rate": 0.75, "avg_ms": 2.5},
            {"second": 2, "requests": 0, "rps": 0, "success_rate": None, "avg_ms": None}]
    assert pipeops.timeseries_points(rows, "2025-11-25T01:40:00.123Z") == [
        {"timestamp": "2025-11-25T01:40:00.123Z", "requests": 12, "rps": 10.0, "avg_latency": 2.5,
         "success_rate": 75.0},
        {"timestamp": "2025-11-25T01:40:01.123Z", "requests": 0, "rps": 0.0, "avg_latency": 0.0,
         "success_rate": 0.0}]


# --------------------------------------------------------------------------- the API, in-process

def _hist(*values_us):
    hist = _engine.Histogram()
    for value in values_us:
        hist.record_value(value)
    return hist.to_bytes()


def _window(second, responses, successes, latency_us, connect_errors=0):
    errors = [0] * len(ERROR_KINDS)
    errors[ERROR_KINDS.index("connect")] = connect_errors
    return {"second": second, "worker": 0,
            "counters": {"responses": responses, "successes": successes, "bytes": 10 * responses,
                         "errors": errors, "status": {200: successes, 503: responses - successes} if responses
                         else {}, "max_wait_us": 0},
            "latency": _hist(*[latency_us] * responses), "service": _hist(*[latency_us] * responses),
            "loop_lag_us": 100, "in_flight": 2, "partial": False}


def store_run(db_path, *, seconds=3, responses=10, successes=10, connect_errors=0, status="completed",
              finish=None, **columns):
    """A run of `seconds` stored windows (one worker), finished with `finish` columns (None:
    left running)."""
    writer = RunWriter(db_path, store_mode="windows")
    row = {"url": "http://example.com:8080/x", "host": "example.com", "method": "GET", "mode": "closed",
           "total_users": 2, "workers": 1, "duration": float(seconds)}
    row.update(columns)
    writer.begin(row)
    for second in range(seconds):
        writer.submit_window(_window(second, responses, successes, 2000, connect_errors))
    if finish is not None:
        attempts = seconds * (responses + connect_errors)
        summary = {"total_requests": attempts, "success_count": seconds * successes,
                   "error_count": attempts - seconds * successes, "rps": float(responses),
                   "avg_latency": 2.0, "p50": 2.0, "p99": 2.0, "measured_duration": float(seconds),
                   "stop_reason": "duration",
                   "errors_by_kind": json.dumps({"connect": seconds * connect_errors} if connect_errors else {}),
                   "status_codes": json.dumps({k: v for k, v in (("200", seconds * successes),
                                               ("503", seconds * (responses - successes))) if v}),
                   "latency_hist": _hist(*[2000] * (seconds * responses)),
                   "service_hist": _hist(*[2000] * (seconds * responses))}
        summary.update(finish)
        writer.finish(summary, status=status)
    return writer


@pytest.fixture
def client(db_path):
    with TestClient(create_app(ServeContext(db_path=db_path, allow_private=True))) as test_client:
        yield test_client


def _everywhere(client, run_uuid):
    """(status, history entry, metrics, compare side) of one run."""
    status = client.get(f"/api/status/{run_uuid}").json()
    entry = next(r for r in client.get("/api/history").json()["runs"] if r["uuid"] == run_uuid)
    metrics = client.get(f"/api/metrics/{run_uuid}").json()
    side = client.get(f"/api/compare?a={run_uuid}&b={run_uuid}").json()["a"]
    return status, entry, metrics, side


def test_results_in_every_payload(client, db_path):
    plain = store_run(db_path, label="plain", finish={})
    dead = store_run(db_path, label="dead", responses=0, successes=0, connect_errors=800, finish={
        "error_messages": json.dumps({"connect": "connection refused 127.0.0.1:18119"})})
    broken = store_run(db_path, label="broken", finish={"thresholds": json.dumps([
        {"expression": "p99<1ms", "metric": "p99", "op": "<", "limit": 1.0, "unit": "ms", "actual": 2.0,
         "passed": False}])})
    kept = store_run(db_path, label="kept", finish={"thresholds": json.dumps([
        {"expression": "p99<1s", "metric": "p99", "op": "<", "limit": 1000.0, "unit": "ms", "actual": 2.0,
         "passed": True}])})
    tripped = store_run(db_path, label="tripped", successes=2, status="stopped",
                        finish={"stop_reason": "aborted"})
    expected = {plain.uuid: ("no thresholds", None), kept.uuid: ("passed", None),
                dead.uuid: ("failed", "no successful response: connect 2,400 (first connect error: "
                                      "connection refused 127.0.0.1:18119)"),
                broken.uuid: ("failed", "threshold not met: p99<1ms"),
                tripped.uuid: ("failed", "stopped by the error-rate circuit breaker")}
    for run_uuid, (result, reason) in expected.items():
        for payload in _everywhere(client, run_uuid):
            assert (payload["result"], payload["result_reason"]) == (result, reason), payload
    status, entry, metrics, _side = _everywhere(client, dead.uuid)
    assert status["status"] == "completed"                  # the status stays what it was
    assert status["error_messages"] == metrics["error_messages"] == entry["error_messages"] == \
        {"connect": "connection refused 127.0.0.1:18119"}
    assert status["thresholds"] == [] and status["stopped_by_circuit"] is False
    status, entry, metrics, _side = _everywhere(client, broken.uuid)
    assert [t["passed"] for t in status["thresholds"]] == [t["passed"] for t in entry["thresholds"]] == \
        [t["passed"] for t in metrics["thresholds"]] == [False]
    assert _everywhere(client, tripped.uuid)[0]["stopped_by_circuit"] is True
    assert client.get(f"/api/metrics/{tripped.uuid}").json()["stopped_by_circuit"] is True
    html = client.get(f"/report/{dead.uuid}").text
    assert '<span class="status failed"' in html and "connection refused 127.0.0.1:18119" in html
    assert '<span class="status failed"' not in client.get(f"/report/{plain.uuid}").text


def test_the_summary_columns_carry_the_verdict(db_path):
    """queries.WEB_RUN_COLUMNS (what every poll reads) hold thresholds and the first error
    messages: no second read of the whole row (histogram blobs included) per run."""
    rules = [{"expression": "p99<1s", "passed": True}]
    messages = {"connect": "connection refused 127.0.0.1:18119"}
    writer = store_run(db_path, connect_errors=1, finish={"thresholds": json.dumps(rules),
                                                          "error_messages": json.dumps(messages)})
    conn = store.open_database(db_path, readonly=True, create=False)
    try:
        rows = [queries.run_summary(conn, writer.uuid), queries.runs_page(conn, 1, 0)[0]]
    finally:
        conn.close()
    for row in rows:
        assert json.loads(row["thresholds"]) == rules and json.loads(row["error_messages"]) == messages
        assert json.loads(row["errors_by_kind"]) == {"connect": 3} and "latency_hist" not in row


def test_a_running_run_has_no_result_yet(client, db_path):
    writer = store_run(db_path, label="live")
    try:
        status = client.get(f"/api/status/{writer.uuid}").json()
        assert status["status"] == "running" and status["result"] is None
        assert client.get("/api/running").json()[0]["result"] is None
        metrics = client.get(f"/api/metrics/{writer.uuid}").json()
        assert metrics["result"] is None and metrics["is_running"] is True
    finally:
        writer.finish({}, status="stopped")


def test_metrics_carry_the_original_flat_keys(client, db_path):
    run = store_run(db_path, responses=10, successes=8, connect_errors=2, finish={})
    metrics = client.get(f"/api/metrics/{run.uuid}").json()
    assert metrics["total_requests"] == 36 and metrics["success_count"] == 24 and metrics["error_count"] == 12
    assert metrics["error_rate"] == pytest.approx(100 * 12 / 36)
    assert metrics["avg_rps"] == pytest.approx(10.0) and metrics["rps"] == pytest.approx(10.0)
    assert metrics["p50"] == metrics["p50_latency"] == pytest.approx(2.0, rel=0.01)
    assert metrics["p95"] == metrics["p95_latency"] == pytest.approx(2.0, rel=0.01)
    assert metrics["p99"] == metrics["p99_latency"] == pytest.approx(2.0, rel=0.01)
    assert metrics["is_running"] is False and metrics["stopped_by_circuit"] is False
    assert metrics["duration"] == 3.0
    # ours are still there, unchanged
    assert metrics["requests"] == 30 and metrics["attempts"] == 36 and metrics["errors"] == 12


def test_historical_metrics_and_the_original_timeseries(client, db_path):
    run = store_run(db_path, responses=10, successes=9, finish={}, mask_host=True)
    history = client.get(f"/api/historical-metrics/{run.uuid}").json()
    assert history["uuid"] == run.uuid and history["id"] == run.run_id
    assert history["host"] == "ex*****.com"                             # masked, as everywhere
    assert (history["total_requests"], history["success_count"], history["error_count"]) == (30, 27, 3)
    assert history["error_rate"] == pytest.approx(10.0) and history["result"] == "no thresholds"
    points = client.get(f"/api/timeseries/{run.uuid}?format=pipeops").json()
    assert points == history["time_series"] and len(points) == 3
    assert [p["requests"] for p in points] == [10, 10, 10]
    assert all(p["success_rate"] == pytest.approx(90.0) and p["avg_latency"] == pytest.approx(2.0, rel=0.01)
               for p in points)
    assert set(points[0]) == {"timestamp", "requests", "rps", "avg_latency", "success_rate"}
    ours = client.get(f"/api/timeseries/{run.uuid}").json()            # our default shape stays
    assert set(ours) == {"uuid", "status", "seconds"} and len(ours["seconds"]) == 3
    bad = client.get(f"/api/timeseries/{run.uuid}?format=csv")
    assert (bad.status_code, bad.json()) == (400, {"error": "format must be pipeops (or left out for this "
                                                            "API's shape)"})
    assert client.get("/api/historical-metrics/00000000-0000-4000-8000-000000000000").status_code == 404


def test_start_refuses_bad_bodies_of_both_shapes_before_any_blast(db_path):
    ctx = ServeContext(db_path=db_path, allow_private=True)
    with TestClient(create_app(ctx)) as client:
        for body, message in (
                ({"url": "http://127.0.0.1:9/", "users": 1, "verbose": True}, "unknown field 'verbose'"),
                ({"host": "127.0.0.1:9", "users": 1, "verbose": True}, "unknown field 'verbose' in a PipeOps"),
                ({"host": "127.0.0.1:9", "error_threshold": 101}, "error_threshold must be"),
                ({"url": "http://127.0.0.1:9/", "thresholds": ["p42<300ms"]}, "unknown metric 'p42'")):
            response = client.post("/api/start", json=body)
            assert response.status_code == 400 and message in response.json()["error"], response.json()
        # deeply nested JSON: 400, not a 500 RecursionError
        json_type = {"Content-Type": "application/json"}
        for raw in (b"[" * 100_000, b'{"url": "http://127.0.0.1:9/", "body": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                    b'{"host": "127.0.0.1:9", "auth": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}"):
            response = client.post("/api/start", content=raw, headers=json_type)
            assert response.status_code == 400, response.text
            assert response.json() == {"error": f"the request body is nested too deeply (at most "
                                                f"{MAX_JSON_DEPTH} levels)"}
    assert ctx.manager.runs == {}


# --------------------------------------------------------------------------- end to end (slow)

@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    from test_serve_api import Server
    server = Server(tmp_path_factory.mktemp("pipeops") / "runs.db", "--allow-private")
    yield server
    server.terminate()


@pytest.fixture(scope="module")
def target():
    t = TargetProcess()
    yield t
    t.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_real_original_body_starts_a_run_and_answers_its_fields(serve, target):
    body = {"host": f"127.0.0.1:{target.port}", "mask_host": False, "users": 2, "ramp_up_sec": 1,
            "duration": 3, "auth": {"type": "jwt", "token": "tok"}, "method": "GET",
            "headers": {"X-Client": "pipeops"}, "max_concurrent_requests": 25, "error_threshold": 50}
    response = serve.start("127.0.0.21", **body)
    assert response.status == 201, response.body
    started = response.json
    assert started["status"] == "started" and started["test_uuid"] == started["uuid"]
    assert re.fullmatch(r"[0-9a-f-]{36}", started["test_uuid"])
    assert isinstance(started["test_id"], int) and started["test_id"] >= 1
    run_uuid = started["test_uuid"]
    status = serve.wait_status(run_uuid, {"completed", "stopped", "failed"}, 30)
    assert status["status"] == "completed" and status["id"] == started["test_id"]
    assert (status["rate"], status["ramp_up"], status["users"], status["duration"]) == (50, 1, 2, 3)
    assert status["abort_on_error_rate"] == 0.5 and status["result"] == "no thresholds"
    assert status["url"] == f"http://127.0.0.1:{target.port}"

    metrics = serve.get(f"/api/metrics/{run_uuid}").json
    assert metrics["is_running"] is False and metrics["stopped_by_circuit"] is False
    assert metrics["error_rate"] == 0.0 and metrics["avg_rps"] > 0
    assert 0 < metrics["p50"] <= metrics["p95"] <= metrics["p99"]
    assert metrics["total_requests"] == metrics["attempts"]
    assert 50 <= metrics["total_requests"] <= 160          # open loop at 2 x 25 / s, ramped over 1 s

    history = serve.get(f"/api/historical-metrics/{run_uuid}").json
    assert history["id"] == started["test_id"] and history["host"] == "127.0.0.1"
    points = serve.get(f"/api/timeseries/{run_uuid}?format=pipeops").json
    assert points == history["time_series"] and len(points) >= 2
    assert sum(p["requests"] for p in points) == history["total_requests"] == metrics["total_requests"]
    assert all(p["success_rate"] == 100.0 for p in points)

    conn = store.open_database(serve.db, readonly=True, create=False)
    try:
        sent = json.loads(queries.run_by_uuid(conn, run_uuid)["headers"])      # what the blast sent
    finally:
        conn.close()
    # (stored without the credential's secret: headers.stored_header_value)
    assert sent == {"X-Client": "pipeops", "Authorization": "Bearer ***"}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_real_thresholds_are_stored_and_judged(serve, target):
    failing = serve.start("127.0.0.22", url=target.url, users=2, duration=2,
                          thresholds=["p99<10s", "rps<1"], label="judged")
    passing = serve.start("127.0.0.22", url=target.url, users=2, duration=2, thresholds=["p99<10s"])
    assert failing.status == passing.status == 201, (failing.body, passing.body)
    bad = serve.wait_status(failing.json["uuid"], {"completed"}, 30)
    good = serve.wait_status(passing.json["uuid"], {"completed"}, 30)
    assert bad["result"] == "failed" and bad["result_reason"] == "threshold not met: rps<1"
    assert [(t["expression"], t["passed"]) for t in bad["thresholds"]] == [("p99<10s", True), ("rps<1", False)]
    assert good["result"] == "passed" and good["thresholds"][0]["passed"] is True
    entry = next(r for r in serve.get("/api/history").json["runs"] if r["uuid"] == failing.json["uuid"])
    assert entry["result"] == "failed" and [t["passed"] for t in entry["thresholds"]] == [True, False]
    stored = json.loads(cli("show", failing.json["uuid"], "--json", "--db", serve.db).stdout)
    assert [t["passed"] for t in stored["thresholds"]] == [True, False]            # the CLI stored them
    refused = serve.start("127.0.0.22", url=target.url, thresholds=["p42<300ms"])
    assert refused.status == 400 and "unknown metric 'p42'" in refused.json["error"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_real_circuit_breaker_and_a_dead_port(serve, start_target):
    failing_target = start_target("--status", "500")
    tripped = serve.start("127.0.0.23", url=failing_target.url, users=2, duration=20,
                          abort_on_error_rate="50%")
    dead_port = free_port()
    dead = serve.start("127.0.0.23", url=f"http://127.0.0.1:{dead_port}/", users=2, duration=2)
    assert tripped.status == dead.status == 201, (tripped.body, dead.body)

    st = serve.wait_status(tripped.json["uuid"], {"stopped", "completed", "failed"}, 30)
    assert st["status"] == "stopped" and st["stop_reason"] == "aborted" and st["stopped_by_circuit"] is True
    assert st["result"] == "failed" and st["elapsed_s"] < 10
    assert st["error_messages"] == {"status": "HTTP 500"}
    assert serve.get(f"/api/metrics/{tripped.json['uuid']}").json["stopped_by_circuit"] is True

    st = serve.wait_status(dead.json["uuid"], {"completed", "stopped", "failed"}, 30)
    assert st["result"] == "failed"
    assert st["error_messages"] == {"connect": f"connection refused 127.0.0.1:{dead_port}"}
    assert st["result_reason"].startswith("no successful response: connect ")
    entry = next(r for r in serve.get("/api/history").json["runs"] if r["uuid"] == dead.json["uuid"])
    assert entry["result"] == "failed"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_real_dead_port_reads_failed_in_the_browser(serve, tmp_path):
    """A run started from the form against a dead port, with thresholds and the circuit
    breaker: the run page and the history show it "failed" (red), with its thresholds."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    base = f"http://127.0.0.1:{serve.port}"
    dead_url = f"http://127.0.0.1:{free_port()}/"
    try:
        driver.get(f"{base}/")
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "start-form").is_displayed())
        for field, value in (("url", dead_url), ("users", "2"), ("duration", "3")):
            element = driver.find_element(By.ID, field)
            element.clear()
            element.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, "#pass-fail summary").click()
        driver.find_element(By.ID, "thresholds").send_keys("p99<300ms, errors<1%")
        driver.find_element(By.ID, "abort_on_error_rate").send_keys("50")
        driver.find_element(By.ID, "start-button").click()
        WebDriverWait(driver, 15).until(lambda d: "/test/" in d.current_url)
        run_uuid = driver.current_url.split("?")[0].rstrip("/").rsplit("/", 1)[1]

        badge = driver.find_element(By.ID, "status")
        WebDriverWait(driver, 30).until(lambda d: badge.get_attribute("data-result") == "failed")
        assert badge.text.lower() == "failed" and "badge-failed" in badge.get_attribute("class")
        assert badge.get_attribute("data-status") in ("completed", "stopped")
        reason = driver.find_element(By.ID, "result-reason")
        assert reason.is_displayed() and "connection refused 127.0.0.1:" in reason.text
        assert driver.find_element(By.ID, "progress").get_attribute("data-result") == "failed"
        line = driver.find_element(By.ID, "thresholds-line")
        assert line.is_displayed()
        assert [t.text.split()[0] for t in line.find_elements(By.CSS_SELECTOR, ".threshold-fail")][:2] == \
            ["p99<300ms", "errors<1%"]
        status = serve.status(run_uuid)
        assert status["abort_on_error_rate"] == 0.5 and status["result"] == "failed"
        assert [t["passed"] for t in status["thresholds"]] == [False, False]

        driver.get(f"{base}/")
        WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.ID, f"history-row-{run_uuid}"))
        row = driver.find_element(By.ID, f"history-row-{run_uuid}")
        assert row.get_attribute("data-result") == "failed" and "row-failed" in row.get_attribute("class")
        assert row.find_element(By.CSS_SELECTOR, ".badge").text.lower() == "failed"
        errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
