"""GET /metrics: the runs in the Prometheus text format, checked with prometheus_client's own
parser.  The histogram buckets come from the engine's HdrHistogram; in-process tests use
Starlette's TestClient on real SQLite files written by RunWriter; the slow one watches a real
run of a real `loadtester serve` against `loadtester target`."""
from __future__ import annotations

import json
import math
import random
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from conftest import TargetProcess, begin_stored_run, wait_for
from loadtester import _engine
from loadtester.model import ERROR_KINDS
from loadtester.web import prometheus
from loadtester.web.app import create_app
from loadtester.web.context import ServeContext

# --------------------------------------------------------------------------- histogram buckets


def test_bucket_tops_follow_the_engine_layout():
    tops = prometheus.bucket_tops_us()
    assert tops[:3] == (0, 1, 2) and len(tops) > 1000
    assert all(a < b for a, b in zip(tops, tops[1:]))
    for top in tops[1::97]:
        low, high = _engine.bucket_bounds(top)
        assert high == top and _engine.bucket_bounds(low - 1)[1] == low - 1     # buckets abut


def _histogram(values):
    hist = _engine.Histogram()
    for value in values:
        hist.record_value(value)
    return hist


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cumulative_buckets_count_every_sample_once(seed):
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(math.log(20_000), 2.0)) for _ in range(5000)]
    values += [999, 1000, 1001, 60_000_000, 120_000_000, 0, 3]              # edges, past 60 s
    hist = _histogram(values)
    bounds = prometheus.BUCKETS_S
    counts = prometheus.cumulative_buckets(hist, bounds)
    top = max(values)
    expected = [sum(1 for v in values if min(_engine.bucket_bounds(v)[1], top) <= b * 1e6) for b in bounds]
    assert counts == expected
    assert counts == sorted(counts) and counts[-1] < hist.total                # 120 s is past 60 s
    assert sum(c for _, c in prometheus.bucket_counts(hist)) == hist.total == len(values)
    # the same story as the percentiles the API reports (bucket highest value, clamped to max)
    for p in (50, 90, 99, 99.9):
        rank = math.ceil(p / 100 * hist.total - 1e-9)
        for bound, seen in zip(bounds, counts):
            assert (hist.value_at_percentile(p) <= bound * 1e6) == (seen >= rank), (p, bound)
    # each bound misses at most the samples of the one bucket it cuts (< 1% of the value wide)
    for bound, seen in zip(bounds, counts):
        exact = sum(1 for v in values if v <= bound * 1e6)
        cut = [v for v in values if _engine.bucket_bounds(v)[0] <= bound * 1e6 < _engine.bucket_bounds(v)[1]]
        assert 0 <= exact - seen <= len(cut)


def test_an_empty_histogram_has_empty_buckets():
    assert prometheus.cumulative_buckets(_engine.Histogram(), prometheus.BUCKETS_S) == [0] * 15


# --------------------------------------------------------------------------- /metrics in-process

def _hist(*values_us):
    return _histogram(values_us).to_bytes()


def _window(second, responses, successes, latency_us, timeouts=0, in_flight=3):
    errors = [0] * len(ERROR_KINDS)
    errors[ERROR_KINDS.index("timeout")] = timeouts
    return {"second": second, "worker": 0,
            "counters": {"responses": responses, "successes": successes, "bytes": 10 * responses,
                         "errors": errors, "status": {200: successes, 500: responses - successes},
                         "max_wait_us": 0},
            "latency": _hist(*[latency_us] * responses), "service": _hist(*[latency_us] * responses),
            "loop_lag_us": 100, "in_flight": in_flight, "partial": False}


def _begin(db_path, **columns):
    return begin_stored_run(db_path, **columns)


def _families(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(families, family, name=None, **labels):
    return [s for s in families[family].samples if (name is None or s.name == name)
            and all(s.labels.get(k) == v for k, v in labels.items())]


def _value(families, family, name=None, **labels):
    found = _samples(families, family, name, **labels)
    assert len(found) == 1, (family, name, labels, found)
    return found[0].value


def test_metrics_of_finished_and_running_runs_parse_as_prometheus_text(db_path):
    done = _begin(db_path, label='nightly "A"\\b\nline', mask_host=True)
    latencies = [500] * 40 + [3000] * 50 + [200_000] * 10                    # 0.5 ms, 3 ms, 200 ms
    done.submit_window(_window(0, 100, 90, 500, timeouts=4))
    done.finish({"total_requests": 104, "success_count": 90, "error_count": 14, "rps": 100.0,
                 "measured_duration": 1.0, "stop_reason": "duration",
                 "status_codes": json.dumps({"200": 90, "500": 10}),
                 "errors_by_kind": json.dumps({"timeout": 4, "status": 10}),
                 "latency_hist": _hist(*latencies), "service_hist": _hist(*latencies)})
    live = _begin(db_path, label="live", url="http://127.0.0.1:9/", host="127.0.0.1")
    try:
        live.submit_window(_window(0, 20, 20, 1500, in_flight=5))
        live.submit_window(_window(1, 30, 30, 1500, in_flight=7))
        with TestClient(create_app(ServeContext(db_path=db_path))) as client:
            def seconds_stored():
                return [r["second"] for r in client.get(f"/api/timeseries/{live.uuid}").json()["seconds"]]
            assert wait_for(lambda: seconds_stored() == [1, 2], 10)
            response = client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            families = _families(response.text)
            only_running = _families(client.get("/metrics?finished=0").text)
            assert client.get("/metrics?finished=x").status_code == 400
            assert client.get("/metrics?finished=501").status_code == 400
    finally:
        live.finish({}, status="stopped")

    assert {f: families[f].type for f in families} == {
        "loadtester_run_info": "gauge", "loadtester_requests": "counter", "loadtester_responses": "counter",
        "loadtester_errors": "counter", "loadtester_latency_seconds": "histogram",
        "loadtester_in_flight": "gauge"}
    finished = {"uuid": done.uuid, "label": 'nightly "A"\\b\nline', "url": "http://ex*****.com:8080/***"}
    running = {"uuid": live.uuid, "label": "live", "url": "http://127.0.0.1:9/"}
    assert _value(families, "loadtester_run_info", **finished, status="completed",
                  result="no thresholds") == 1
    assert _value(families, "loadtester_run_info", **running, status="running", result="") == 1
    assert "example.com" not in response.text                                 # masked host

    assert _value(families, "loadtester_requests", **finished) == 104
    assert _value(families, "loadtester_responses", **finished, code="200") == 90
    assert _value(families, "loadtester_responses", **finished, code="500") == 10
    assert {s.labels["kind"]: s.value for s in _samples(families, "loadtester_errors", **finished)} == \
        {"connect": 0, "timeout": 4, "read": 0, "write": 0, "parse": 0, "status": 10}
    buckets = {s.labels["le"]: s.value for s in _samples(
        families, "loadtester_latency_seconds", "loadtester_latency_seconds_bucket", **finished)}
    assert list(buckets) == [*(repr(b) for b in prometheus.BUCKETS_S), "+Inf"]
    assert (buckets["0.001"], buckets["0.0025"], buckets["0.005"], buckets["0.1"], buckets["0.25"],
            buckets["+Inf"]) == (40, 40, 90, 90, 100, 100)
    assert _value(families, "loadtester_latency_seconds", "loadtester_latency_seconds_count", **finished) == 100
    assert _value(families, "loadtester_latency_seconds", "loadtester_latency_seconds_sum", **finished) == \
        pytest.approx((40 * 500 + 50 * 3000 + 10 * 200_000) / 1e6)
    assert not _samples(families, "loadtester_in_flight", uuid=done.uuid)      # only while it runs

    assert _value(families, "loadtester_requests", **running) == 50           # from its windows
    assert _value(families, "loadtester_latency_seconds", "loadtester_latency_seconds_count", **running) == 50
    assert _value(families, "loadtester_in_flight", **running) == 7           # the newest second
    assert {s.labels["uuid"] for s in only_running["loadtester_run_info"].samples} == {live.uuid}


def test_metrics_need_the_token_like_the_api(db_path):
    with TestClient(create_app(ServeContext(db_path=db_path, token="s3cret"))) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/metrics/").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/metrics?access_token=s3cret").status_code == 200
        assert client.get("/healthz").status_code == 200
    with TestClient(create_app(ServeContext(db_path=db_path))) as open_client:
        text = open_client.get("/metrics").text
        assert _families(text)["loadtester_run_info"].samples == []           # no runs: families only


# --------------------------------------------------------------------------- end to end (slow)

@pytest.mark.slow
@pytest.mark.timeout(120)
def test_real_run_watched_through_metrics(tmp_path):
    from test_serve_api import Server

    target = TargetProcess("--delay", "2ms")
    server = Server(tmp_path / "runs.db", "--allow-private")
    try:
        started = server.start("127.0.0.31", url=target.url, users=4, duration=4, rate=400, label="graf")
        assert started.status == 201, started.body
        run_uuid = started.json["uuid"]
        assert wait_for(lambda: len(server.get(f"/api/timeseries/{run_uuid}").json["seconds"]) >= 2, 15)
        live = _families(server.get("/metrics").body.decode())
        labels = {"uuid": run_uuid, "label": "graf", "url": target.url}
        assert _value(live, "loadtester_run_info", **labels, status="running", result="") == 1
        assert _value(live, "loadtester_requests", **labels) > 0
        assert _value(live, "loadtester_in_flight", **labels) >= 0
        server.wait_status(run_uuid, {"completed"}, 30)
        time.sleep(0.2)
        final = _families(server.get("/metrics").body.decode())
        metrics = server.get(f"/api/metrics/{run_uuid}").json
        assert _value(final, "loadtester_run_info", **labels, status="completed",
                      result="no thresholds") == 1
        assert _value(final, "loadtester_requests", **labels) == metrics["attempts"]
        assert _value(final, "loadtester_responses", **labels, code="200") == metrics["status_codes"]["200"]
        count = _value(final, "loadtester_latency_seconds", "loadtester_latency_seconds_count", **labels)
        assert count == metrics["requests"]
        buckets = [s.value for s in _samples(final, "loadtester_latency_seconds",
                                             "loadtester_latency_seconds_bucket", **labels)]
        assert buckets == sorted(buckets) and buckets[-1] == count
        assert buckets[0] < count                              # a 2 ms target: little under 1 ms
        assert not _samples(final, "loadtester_in_flight", uuid=run_uuid)
    finally:
        server.terminate()
        target.stop()
