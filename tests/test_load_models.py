"""Load models that tell the truth: open loop, coordinated omission, ramp-up, workers,
several targets, circuit breaker and thresholds — against real targets on 127.0.0.1."""
import bisect
import json
import math
import threading
import time
import urllib.request

from conftest import blast_json, cli, request_lines


def show(db, ref="last"):
    result = cli("show", ref, "--json", "--db", db)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stored_latencies(db, ref="last"):
    result = cli("export", ref, "--requests", "--format", "ndjson", "--db", db, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return rows


def nearest_rank(sorted_values, p):
    rank = max(1, math.ceil(p / 100 * len(sorted_values) - 1e-9))
    return sorted_values[rank - 1]


def test_open_loop_rate_is_accurate_overall_and_per_second(start_target, db):
    target = start_target()
    report = blast_json(target.url, "--rate", "5000", "-d", "10s", "-c", "50", "--store",
                        "windows", db=db)
    assert report["mode"] == "rate"
    assert abs(report["requests"] - 50_000) <= 500
    seconds = show(db)["seconds"]
    full = [s for s in seconds if s["second"] < 10]
    assert len(full) == 10
    for s in full:
        assert abs(s["requests"] - 5000) <= 250, full
    assert "uncorrected_latency_ms" in report


def test_coordinated_omission_is_corrected_like_wrk2(start_target, db):
    target = start_target()
    pause_url = target.url + "__loadtester/pause?ms=1000"

    def stall_once():
        time.sleep(4.0)
        urllib.request.urlopen(pause_url, timeout=5).read()
    threading.Thread(target=stall_once, daemon=True).start()
    report = blast_json(target.url, "--rate", "2000", "-d", "10s", "-c", "50", db=db)
    corrected_p99_ms = report["latency_ms"]["p99"]
    uncorrected_p99_ms = report["uncorrected_latency_ms"]["p99"]
    assert corrected_p99_ms >= 700, report["latency_ms"]
    assert uncorrected_p99_ms < 100, report["uncorrected_latency_ms"]
    assert report["latency_ms"]["max"] >= 900
    # both are stored: the run row keeps both histograms
    again = show(db)
    assert again["latency_ms"]["p99"] == corrected_p99_ms
    assert again["uncorrected_latency_ms"]["p99"] == uncorrected_p99_ms


def test_workers_merge_exactly_and_match_stored_rows(start_target, db):
    target = start_target()
    report = blast_json(target.url, "--workers", "2", "-c", "20", "-n", "40000", db=db)
    assert report["workers"] == 2
    assert report["requests"] == 40000 == target.stats()["served"]
    rows = stored_latencies(db)
    assert len(rows) == 40000
    assert {row["worker"] for row in rows} == {0, 1}
    by_worker = [sum(1 for row in rows if row["worker"] == w) for w in (0, 1)]
    assert sum(by_worker) == report["requests"]
    latencies = sorted(row["latency"] for row in rows)
    for key, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        exact_ms = nearest_rank(latencies, p) / 1000
        assert abs(report["latency_ms"][key] - exact_ms) <= 0.01 * exact_ms + 0.001, key


def test_closed_loop_ramp_up_is_visible_per_second(start_target, db):
    target = start_target("--delay", "10ms")
    blast_json(target.url, "-c", "20", "--ramp-up", "4s", "-d", "6s", "--store", "windows",
               db=db)
    per_second = [s["requests"] for s in show(db)["seconds"]][:6]
    # connections join at 0.2 s steps: each second carries more than the one before
    assert per_second[0] < per_second[1] < per_second[2] < per_second[3], per_second
    assert per_second[0] < 0.45 * per_second[5], per_second
    assert abs(per_second[4] - per_second[5]) <= 0.15 * per_second[5], per_second


def test_open_loop_ramp_up_follows_the_timetable(start_target, db):
    target = start_target()
    blast_json(target.url, "--rate", "2000", "--ramp-up", "4s", "-d", "6s", "--store",
               "windows", db=db)
    per_second = [s["requests"] for s in show(db)["seconds"]][:6]
    expected = [250, 750, 1250, 1750, 2000, 2000]
    for got, want in zip(per_second, expected):
        assert abs(got - want) <= 0.06 * want + 10, (per_second, expected)


def test_several_urls_are_taken_in_turn_with_counts_per_target(start_target, db):
    one, two = start_target(), start_target()
    report = blast_json(one.url, two.url + "other", "-n", "2000", "-c", "4", db=db)
    assert report["requests"] == 2000
    counts = [t["requests"] for t in report["targets"]]
    assert sum(counts) == 2000
    assert one.stats()["served"] == counts[0] and two.stats()["served"] == counts[1]
    assert min(counts) > 600


def test_targets_file_round_robin_with_headers_and_bodies(recording_server, tmp_path, db):
    server, heads = recording_server()
    (tmp_path / "body.json").write_text('{"n": 1}')
    targets = tmp_path / "targets.txt"
    targets.write_text(f"GET {server.url}a\nX-Test: 1\n\nPOST {server.url}b\n"
                       f"Content-Type: application/json\n@body.json\n\n# comment\n"
                       f"GET {server.url}c\n")
    report = blast_json(f"--targets={targets}", "-n", "300", "-c", "1", db=db)
    assert report["requests"] == 300
    assert [t["requests"] for t in report["targets"]] == [100, 100, 100]
    assert request_lines(heads[:3]) == ["GET /a HTTP/1.1", "POST /b HTTP/1.1", "GET /c HTTP/1.1"]


def test_bad_targets_file_is_a_usage_error(tmp_path, db):
    bad = tmp_path / "bad.txt"
    bad.write_text("FETCH\n")
    result = cli("blast", "--targets", bad, "--db", db)
    assert result.returncode == 2 and "bad.txt:1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_circuit_breaker_stops_a_failing_run_early(start_target, db):
    target = start_target("--status", "500")
    started = time.monotonic()
    result = cli("blast", target.url, "-d", "30s", "-c", "5", "--abort-on-error-rate", "50%",
                 "--json", "--db", db)
    assert time.monotonic() - started < 10
    report = json.loads(result.stdout)
    assert report["stop_reason"] == "aborted"
    assert result.returncode == 1


def test_threshold_exit_codes(start_target, db):
    target = start_target()
    passing = cli("blast", target.url, "-n", "2000", "-c", "5", "--threshold", "p99<5s",
                  "--threshold", "errors<1%", "--threshold", "rps>10", "--db", db)
    assert passing.returncode == 0, passing.stderr
    assert "pass" in passing.stdout
    failing = cli("blast", target.url, "-n", "2000", "-c", "5", "--threshold",
                  "rps>100000000", "--json", "--db", db)
    assert failing.returncode == 1
    verdicts = json.loads(failing.stdout)["thresholds"]
    assert [v["passed"] for v in verdicts] == [False]
    bad = cli("blast", target.url, "-n", "10", "--threshold", "p99 about 5", "--db", db)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1


def test_shard_takes_its_share(start_target, db):
    target = start_target()
    report = blast_json(target.url, "-n", "1001", "-c", "10", "--shard", "1/2",
                        "--run-id", "nightly", db=db)
    assert report["requests"] == 500            # 1001 requests over 2 shards: shard 1 gets 500
    assert target.stats()["served"] == 500
    bad = cli("blast", target.url, "--shard", "2/2", "--db", db)
    assert bad.returncode == 2 and "shard" in bad.stderr


def _hgrm_lines(text):
    """[(value µs, percentile 0..1, total count)] of an .hgrm, and its footer's numbers."""
    lines = text.splitlines()
    assert lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"] and lines[1] == ""
    body = [line.split() for line in lines[2:] if line and not line.startswith("#")]
    footer = " ".join(line for line in lines if line.startswith("#["))
    return [(round(float(v) * 1000), float(p), int(n)) for v, p, n, *_ in body], footer


def test_hgrm_export_is_the_exact_percentile_spectrum_of_the_stored_requests(start_target, db, tmp_path):
    # HdrHistogram's .hgrm (wrk2 --u_latency's spectrum): each line's TotalCount is exactly the
    # number of stored responses at or below its value; corrected and uncorrected both.
    target = start_target()
    pause_url = target.url + "__loadtester/pause?ms=300"
    threading.Thread(target=lambda: (time.sleep(1.0), urllib.request.urlopen(pause_url, timeout=5).read()),
                     daemon=True).start()
    report = blast_json(target.url, "--rate", "2000", "-d", "3s", "-c", "20", db=db)
    rows = [r for r in stored_latencies(db) if not r["error"]]
    assert len(rows) == report["requests"] > 5000
    for flags, samples in (((), sorted(r["latency"] for r in rows)),
                           (("--uncorrected",), sorted(max(0, r["latency"] - r["wait_us"]) for r in rows))):
        out = tmp_path / "run.hgrm"
        result = cli("export", "last", "--format", "hgrm", *flags, "-o", out, "--db", db)
        assert result.returncode == 0, result.stderr
        spectrum, footer = _hgrm_lines(out.read_text())
        for value_us, _p, count in spectrum:
            assert count == bisect.bisect_right(samples, value_us), (flags, value_us)
        levels = [p for _v, p, _n in spectrum]
        assert levels[:12] == [0, .1, .2, .3, .4, .5, .55, .6, .65, .7, .75, .775]   # HdrHistogram's ticks
        assert levels[-1] == 1.0 and spectrum[-1][0] == samples[-1] and spectrum[-1][2] == len(samples)
        assert f"Total count    = {len(samples):12d}" in footer
    # the stall: ~600 requests late by the timetable (corrected), ~20 by their own send
    corrected = _hgrm_lines(cli("export", "last", "--format", "hgrm", "--db", db).stdout)[0]
    p99 = {name: next(v for v, p, _n in lines if p >= 0.99) for name, lines in
           (("corrected", corrected), ("uncorrected", spectrum))}
    assert p99["corrected"] >= 100_000 and p99["corrected"] >= 5 * p99["uncorrected"], p99


def test_hgrm_export_of_a_run_without_responses_is_refused(db):
    blast_json("http://127.0.0.1:1/", "-n", "2", "-c", "1", db=db, exit_code=1)
    result = cli("export", "last", "--format", "hgrm", "--db", db)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "loadtester: run 1 has no latency distribution to export (it got no response)\n"
    for args, message in ((("--requests",), "--format hgrm is the run's latency distribution"),
                          (("--uncorrected", "--format", "csv"), "--uncorrected goes with --format hgrm")):
        result = cli("export", "last", "--format", "hgrm", *args, "--db", db) if args[0] == "--requests" \
            else cli("export", "last", *args, "--db", db)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
