"""In-process unit tests for the layers under the CLI: spec, units, aggregate and report.

No servers and no subprocesses: the numbers come from real engine Histograms/Counters and, for
the round trip through the store, a real SQLite file written by RunWriter."""
from __future__ import annotations

import json

import pytest

from loadtester import _engine, store
from loadtester.analysis import aggregate
from loadtester.analysis.report import (render_text, report_from_row, result_columns,
                                        summarize)
from loadtester.model import ERROR_KINDS, percentile_key
from loadtester.headers import parse_header, stored_header_value
from loadtester.model import SpecError
from loadtester.spec import Target, build_spec, parse_rate, parse_shard, parse_url
from loadtester.units import (UnitError, format_bytes, format_ms, iso_utc, parse_duration_s,
                              parse_iso_utc)

# --------------------------------------------------------------------------- units


@pytest.mark.parametrize("text, seconds", [
    ("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1.5h", 5400.0), ("30", 30.0), ("250us", 250e-6),
    ("2w", 14 * 86400.0), ("1D", 86400.0), (" 3 min ", 180.0), (".5s", 0.5),
])
def test_durations_parse_to_seconds(text, seconds):
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "ten seconds", "-1s", "1 day", "5x"])
def test_bad_durations_are_one_line_errors(text):
    with pytest.raises(UnitError) as info:
        parse_duration_s(text, "timeout")
    assert str(info.value).startswith("invalid timeout") and "\n" not in str(info.value)


def test_an_age_needs_a_unit():
    assert parse_duration_s("30d", "age", unit_required=True) == 30 * 86400
    with pytest.raises(UnitError):
        parse_duration_s("30", "age", unit_required=True)


@pytest.mark.parametrize("ms, text", [(None, "-"), (0.5, "500us"), (12.345, "12.35ms"), (2500, "2.50s")])
def test_format_ms(ms, text):
    assert format_ms(ms) == text


@pytest.mark.parametrize("n, text", [(None, "-"), (512, "512 B"), (1536, "1.5 KiB"),
                                     (3 * 1024 ** 2, "3.0 MiB"), (5 * 1024 ** 5, "5120.0 TiB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_format_bytes_for_rates_in_reports():
    assert format_bytes(1536, sep="", digits=2) == "1.50KiB"


def test_timestamps_round_trip_in_utc():
    stamp = "2025-11-25T01:40:00.123Z"
    assert iso_utc(parse_iso_utc(stamp)) == stamp
    assert parse_iso_utc("2025-11-25T01:40:00") is not None          # no zone: UTC
    assert parse_iso_utc("yesterday") is None and parse_iso_utc(None) is None


# --------------------------------------------------------------------------- spec


def test_url_parts_and_host_header():
    url = parse_url("https://[::1]:8443/a?b=1")
    assert (url.scheme, url.host, url.port, url.path) == ("https", "::1", 8443, "/a?b=1")
    assert url.host_header == "[::1]:8443"
    assert parse_url("http://example.test/").host_header == "example.test"
    assert parse_url("http://h").path == "/"


@pytest.mark.parametrize("text, message", [
    ("ftp://h/", "scheme must be http or https"), ("http:///x", "no host"),
    ("http://h:99999/", "bad port"),
])
def test_bad_urls(text, message):
    with pytest.raises(SpecError, match=message):
        parse_url(text)


def test_request_bytes_are_built_once_with_defaults():
    target = Target(parse_url("http://127.0.0.1:8080/x"), "POST", (("X-A", "1"),), b"hi")
    raw = target.request_bytes()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /x HTTP/1.1" and "Host: 127.0.0.1:8080" in lines
    assert "X-A: 1" in lines and "Content-Length: 2" in lines and body == b"hi"
    assert any(line.startswith("User-Agent: loadtester/") for line in lines)


def test_a_given_host_header_wins():
    raw = Target(parse_url("http://127.0.0.1/"), "GET", (("Host", "site.test"),)).request_bytes()
    assert raw.count(b"Host:") == 1 and b"Host: site.test\r\n" in raw


def test_build_spec_validates_and_describes_itself():
    spec = build_spec("http://127.0.0.1:9/", connections=10, duration="2s", rate="300/m",
                      headers=["A: b"], label="x", workers="2")
    assert spec.mode == "rate" and spec.rate_per_s == 5.0 and spec.duration_s == 2.0
    config = spec.config()
    assert config["url"] == "http://127.0.0.1:9/" and config["headers"] == [["A", "b"]]
    assert config["workers"] == 2 and config["mode"] == "rate"


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give a URL"),
    ({"url": "http://h/", "connections": 0}, "invalid connections"),
    ({"url": "http://h/", "duration": "1s", "requests": 5}, "either a duration"),
    ({"url": "http://h/", "duration": "soon"}, "invalid duration"),
    ({"url": "http://h/", "timeout": "0s"}, "invalid timeout"),
    ({"url": "http://h/", "workers": "many"}, "invalid workers"),
    ({"url": "http://h/", "method": "GE T"}, "invalid method"),
    ({"url": "http://h/", "body": "a", "body_file": "b"}, "either --body or --body-file"),
])
def test_build_spec_refuses_bad_input_in_one_line(kwargs, message):
    with pytest.raises(SpecError, match=message) as info:
        build_spec(**kwargs)
    assert "\n" not in str(info.value)


def test_headers_rates_and_shards():
    assert parse_header("Name:  value ") == ("Name", "value")
    with pytest.raises(SpecError):
        parse_header("no colon")
    assert parse_rate("5000") == 5000 and parse_rate("60/m") == 1
    with pytest.raises(SpecError):
        parse_rate("0")
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)


def test_shares_split_connections_count_and_rate_exactly():
    spec = build_spec("http://h/", connections=10, requests=1001, rate="100", shard="0/2",
                      workers="2")
    shares = [spec.share(w, spec.workers) for w in range(spec.workers)]
    other = build_spec("http://h/", connections=10, requests=1001, rate="100", shard="1/2",
                       workers="2")
    shares += [other.share(w, other.workers) for w in range(other.workers)]
    assert sum(s["connections"] for s in shares) == 10
    assert sum(s["max_requests"] for s in shares) == 1001
    assert sum(s["rate_per_s"] for s in shares) == pytest.approx(100)
    assert sorted(s["phase_s"] for s in shares) == pytest.approx([0, 0.01, 0.02, 0.03])


# --------------------------------------------------------------------------- aggregate


def _window(second, worker, latencies_us, status=200, transport_errors=0):
    counters = _engine.Counters.from_dict({
        "responses": len(latencies_us), "successes": len(latencies_us) if status < 400 else 0,
        "bytes": 100 * len(latencies_us),
        "errors": [0, transport_errors, 0, 0, 0, 0], "status": {status: len(latencies_us)},
        "max_wait_us": worker})
    hist = _engine.Histogram()
    for value in latencies_us:
        hist.record_value(value)
    return {"second": second, "worker": worker, "counters": counters.to_dict(),
            "latency": hist.to_bytes(), "service": hist.to_bytes(), "loop_lag_us": 10 * worker}


def test_merging_windows_is_exact_whatever_the_grouping():
    values = [[100 + 37 * i for i in range(50)], [5000 + i for i in range(30)], [70] * 9]
    windows = [_window(s, w, values[(s + w) % 3]) for s in range(3) for w in range(2)]
    everything = sorted(v for s in range(3) for w in range(2) for v in values[(s + w) % 3])
    whole = aggregate.total(windows)
    by_second = aggregate.Totals()
    for second in aggregate.by_second(windows).values():
        by_second.merge(aggregate.total(second))
    for totals in (whole, by_second):
        assert totals.latency.total == len(everything)
        assert totals.latency.sum_us == sum(everything)
        assert totals.latency.min_us == everything[0] and totals.latency.max_us == everything[-1]
        assert totals.counters.bytes_read == 100 * len(everything)
        assert totals.seconds == {0, 1, 2} and totals.loop_lag_us == 10
    assert whole.latency.to_bytes() == by_second.latency.to_bytes()


def test_seconds_rows_add_workers_and_count_errors_as_attempts():
    windows = [_window(0, 0, [1000] * 8), _window(0, 1, [3000] * 2, status=503, transport_errors=3)]
    [row] = aggregate.merged_seconds(windows, percentiles=(50, 99.9), detail=True)
    assert row["requests"] == 13 and row["successes"] == 8 and row["errors"] == 5
    assert row["responses"] == 10 and row["bytes"] == 1000
    assert row["p50_ms"] == pytest.approx(1.0, rel=0.01) and "p999_ms" in row
    assert row["max_ms"] == pytest.approx(3.0, rel=0.01) and row["loop_lag_ms"] == 0.01
    assert row["totals"].requests == 13


def test_summary_columns_match_the_counters():
    totals = aggregate.total([_window(0, 0, [1000, 2000]), _window(1, 0, [3000], status=404)])
    columns = totals.summary_columns()
    assert columns["total_requests"] == 3 and columns["success_count"] == 2
    assert columns["error_count"] == 1
    assert json.loads(columns["status_codes"]) == {"200": 2, "404": 1}
    assert columns["avg_latency"] == pytest.approx(2.0, rel=0.01)
    counters = aggregate.counters_from_row({**columns, "errors_by_kind": columns["errors_by_kind"]})
    assert counters.responses == 3 and counters.successes == 2


def test_error_kinds_come_from_the_engine():
    assert ERROR_KINDS == tuple(_engine.ERROR_NAMES) and ERROR_KINDS[0] == "none"
    assert percentile_key(99.9) == "p999" and percentile_key(50) == "p50"


# --------------------------------------------------------------------------- report


def _summary(**over):
    latency = _engine.Histogram()
    for value in range(1000, 2000):
        latency.record_value(value)
    counters = _engine.Counters.from_dict({
        "responses": 1000, "successes": 990, "bytes": 150_000, "errors": [0, 5, 0, 0, 0, 0],
        "status": {200: 990, 500: 10}, "max_wait_us": 0})
    args = dict(spec_config={"url": "http://127.0.0.1:1/", "method": "GET", "mode": "closed",
                             "connections": 4, "workers": 1},
                counters=counters, latency=latency, service=latency, duration_s=2.0,
                stop_reason="duration", status="completed")
    args.update(over)
    return summarize(**args), latency


def test_summarize_counts_attempts_errors_and_rates():
    report, _ = _summary()
    assert report["requests"] == 1000 and report["attempts"] == 1005
    assert report["errors"] == 15 and report["successes"] == 990
    assert report["success_rate"] == pytest.approx(990 / 1005)
    assert report["rps"] == 500.0 and report["bytes_per_s"] == 75_000
    assert report["errors_by_kind"] == {"connect": 5, "status": 10}
    assert report["status_codes"] == {"200": 990, "500": 10}
    assert report["latency_ms"]["p50"] == pytest.approx(1.5, rel=0.01)
    assert "uncorrected_latency_ms" not in report


def test_text_report_names_what_matters():
    report, _ = _summary()
    text = render_text(report)
    assert text.startswith("GET http://127.0.0.1:1/  (closed loop, 4 connections, 1 worker)")
    assert "1,000 completed in 2.00s" in text and "500.0 req/s" in text
    assert "Errors       connect 5, status 10" in text and "73.24KiB/s" in text


def test_a_stored_run_gives_back_the_report_it_was_written_with(tmp_path):
    report, latency = _summary()
    writer = store.RunWriter(tmp_path / "r.db", store_mode="none")
    run_id, uuid = writer.begin({"url": report["url"], "method": "GET", "mode": "closed",
                                 "total_users": 4, "workers": 1,
                                 "config": json.dumps({"url": report["url"], "method": "GET",
                                                       "mode": "closed", "connections": 4,
                                                       "workers": 1})})
    writer.finish(result_columns(report, latency=latency, service=latency, duration_s=2.0,
                                 stop_reason="duration", dropped_records=0), status="completed")
    conn = store.open_database(tmp_path / "r.db", readonly=True)
    try:
        rebuilt = report_from_row(store.find_run(conn, run_id), tmp_path / "r.db")
    finally:
        conn.close()
    for key in ("requests", "attempts", "errors", "successes", "rps", "status_codes",
                "errors_by_kind", "latency_ms"):
        assert rebuilt[key] == report[key], key
    assert rebuilt["uuid"] == uuid


@pytest.mark.parametrize(("name", "value", "stored"), [
    ("Authorization", "Bearer abc.def", "Bearer ***"),
    ("proxy-authorization", "Basic dXNlcjpwdw==", "Basic ***"),
    ("Authorization", "opaque-token", "***"),
    ("Cookie", "a=1; b=2", "***"),
    ("X-API-Key", "k", "***"),
    ("Authorization", "Bearer {{token}}", "Bearer {{token}}"),      # a template: no secret
    ("X-Trace", "abc", "abc"),
])
def test_a_run_stores_credential_headers_without_their_secret(name, value, stored):
    assert stored_header_value(name, value) == stored


def test_per_target_histograms_pack_and_unpack_exactly_and_a_bad_blob_is_none():
    from loadtester.analysis.aggregate import pack_histograms, unpack_histograms
    hists = [_engine.Histogram() for _ in range(3)]
    for value in (120, 480, 9_000, 1_500_000):
        hists[0].record_value(value)
    hists[2].record_value(77)
    unpacked = unpack_histograms(pack_histograms(hists))
    assert [h.to_bytes() for h in unpacked] == [h.to_bytes() for h in hists]
    assert [h.total for h in unpacked] == [4, 0, 1]
    blob = pack_histograms(hists)
    assert unpack_histograms(None) is None and unpack_histograms(b"") is None
    assert unpack_histograms(blob[:-3]) is None and unpack_histograms(b"\xff\xff\xff\x7f") is None


def test_percentile_spectrum_walks_hdrhistograms_levels_with_exact_counts():
    from loadtester.analysis.export import percentile_spectrum, render_hgrm
    hist = _engine.Histogram()
    for value in range(1, 201):                        # below 256 µs every value is its own bucket
        hist.record_value(value)
    spectrum = percentile_spectrum(hist)
    assert spectrum[:7] == [(1, 0.0, 1), (20, 10.0, 20), (40, 20.0, 40), (60, 30.0, 60),
                            (80, 40.0, 80), (100, 50.0, 100), (110, 55.0, 110)]
    assert all(count == value for value, _level, count in spectrum)        # exact counts
    assert spectrum[-2][0] == spectrum[-1][0] == 200 and spectrum[-1][1:] == (100.0, 200)
    assert percentile_spectrum(_engine.Histogram()) == []
    text = render_hgrm(hist)
    assert text.splitlines()[2] == "       0.001 0.000000000000          1           1.00"
    assert text.splitlines()[-4] == "       0.200 1.000000000000        200"
    assert text.endswith("#[Buckets =           33, SubBuckets     =          256]\n")
