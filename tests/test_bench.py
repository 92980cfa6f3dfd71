"""bench/run.py: its output parsers (sample outputs) and a ~5 s smoke run."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module          # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

WRK = """\
Running 2s test @ http://127.0.0.1:18777/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   488.91us  192.18us   2.36ms   70.35%
    Req/Sec    76.46k     3.80k   82.32k    76.19%
  Latency Distribution
     50%  383.00us
     75%  663.00us
     90%  714.00us
     99%  814.00us
  159575 requests in 2.10s, 24.50MB read
Requests/sec:  75918.07
Transfer/sec:     11.66MB
"""

WRK_ERRORS = """\
Running 5s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Latency Distribution
     50%    1.20ms
     75%    2.00ms
     90%    3.00ms
     99%    1.05s
  1000 requests in 5.00s, 100.00KB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:    200.00
Transfer/sec:     20.00KB
"""

WRK2 = """\
  Latency Distribution (HdrHistogram - Recorded Latency)
 50.000%    1.02ms
 75.000%    1.40ms
 90.000%    1.80ms
 99.000%    2.50ms
 99.900%    9.00ms
 99.990%   12.00ms
  49999 requests in 5.00s, 6.00MB read
Requests/sec:   9999.80
"""

HEY = """\

Summary:
  Total:\t2.0016 secs
  Slowest:\t0.0154 secs
  Fastest:\t0.0001 secs
  Average:\t0.0028 secs
  Requests/sec:\t17589.5585
  \n  Total data:\t457704 bytes
  Size/request:\t13 bytes

Latency distribution:
  10% in 0.0007 secs
  50% in 0.0028 secs
  95% in 0.0055 secs
  99% in 0.0063 secs

Status code distribution:
  [200]\t35200 responses
  [503]\t8 responses

Error distribution:
  [3]\tGet "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused
"""

AB = """\
This is ApacheBench, Version 2.3 <$Revision: 1934973 $>
Benchmarking 127.0.0.1 (be patient)
Finished 174646 requests

Concurrency Level:      50
Time taken for tests:   2.000 seconds
Complete requests:      174646
Failed requests:        2
Non-2xx responses:      5
Keep-Alive requests:    174646
Requests per second:    87322.56 [#/sec] (mean)
Time per request:       0.573 [ms] (mean)

Percentage of the requests served within a certain time (ms)
  50%      1
  98%      1
  99%      3
 100%      4 (longest request)
"""

H2LOAD = """\
finished in 5.00s, 81234.20 req/s, 9.61MB/s
requests: 406171 total, 406221 started, 406171 done, 406160 succeeded, 11 failed, 0 errored, 0 timeout
status codes: 406160 2xx, 0 3xx, 11 4xx, 0 5xx
"""


def test_parse_wrk():
    out = bench.parse_wrk(WRK)
    assert out["rps"] == pytest.approx(75918.07)
    assert out["p99_ms"] == pytest.approx(0.814)
    assert out["requests"] == 159575 and out["errors"] == 0


def test_parse_wrk_units_and_errors():
    out = bench.parse_wrk(WRK_ERRORS)
    assert out["p99_ms"] == pytest.approx(1050.0)      # "1.05s"
    assert out["errors"] == 3 + 2 + 7


def test_parse_wrk2_takes_the_99_line_not_99_9():
    out = bench.parse_wrk(WRK2)
    assert out["p99_ms"] == pytest.approx(2.5)
    assert out["rps"] == pytest.approx(9999.8)


def test_parse_hey():
    out = bench.parse_hey(HEY)
    assert out["rps"] == pytest.approx(17589.5585)
    assert out["p99_ms"] == pytest.approx(6.3)
    assert out["requests"] == 35208
    assert out["errors"] == 8 + 3


def test_parse_ab():
    out = bench.parse_ab(AB)
    assert out["rps"] == pytest.approx(87322.56)
    assert out["p99_ms"] == 3.0                         # ab prints whole milliseconds
    assert out["requests"] == 174646 and out["errors"] == 7


def test_parse_h2load_has_no_p99():
    out = bench.parse_h2load(H2LOAD)
    assert out["rps"] == pytest.approx(81234.2) and out["p99_ms"] is None
    assert out["requests"] == 406171 and out["errors"] == 11


def test_parse_loadtester_json():
    text = json.dumps({"rps": 51865.3, "requests": 103703, "errors": 0, "status": "completed",
                       "latency_ms": {"p50": 0.9, "p99": 1.615}, "dropped_records": 4})
    out = bench.parse_loadtester(text)
    assert out["rps"] == pytest.approx(51865.3) and out["p99_ms"] == pytest.approx(1.615)
    assert out["requests"] == 103703 and out["dropped_records"] == 4


@pytest.mark.parametrize("parser", [bench.parse_wrk, bench.parse_hey, bench.parse_ab,
                                    bench.parse_h2load, bench.parse_loadtester])
def test_parsers_reject_output_without_a_rate(parser):
    with pytest.raises(bench.ParseError):
        parser("connection refused\n")


def test_durations_and_tool_selection():
    assert bench.parse_duration("5s") == 5 and bench.parse_duration("500ms") == 0.5
    assert bench.parse_duration("2") == 2 and bench.parse_duration("1m") == 60
    assert bench.duration_arg(5.0) == "5s" and bench.duration_arg(1.5) == "1500ms"
    assert bench.whole_seconds(0.3) == 1
    names = [t.name for t in bench.select_tools("hey,loadtester,wrk")]
    assert names == ["wrk", bench.BASELINE, bench.STORED, "hey"]    # judged pairs adjacent
    assert bench.round_order(names, 1) == names
    assert bench.round_order(names, 2) == names[::-1]
    with pytest.raises(ValueError):
        bench.select_tools("curl")


def test_verdicts():
    rows = [{"tool": "wrk", "median_rps": 100.0}, {"tool": "hey", "median_rps": 40.0},
            {"tool": bench.BASELINE, "median_rps": 95.0}, {"tool": bench.STORED,
                                                             "median_rps": 80.0}]
    got = {v["label"]: v for v in bench.verdicts(rows)}
    assert got["loadtester/wrk"]["value"] == pytest.approx(0.95) and got["loadtester/wrk"]["met"]
    assert got["loadtester/hey"]["value"] == pytest.approx(2.375)
    assert got["store=requests/store=none"]["met"] is False


def test_previous_build_runs_beside_store_none_and_is_judged(tmp_path):
    tools = bench.with_previous(bench.select_tools("wrk,loadtester-none,hey"), sys.executable)
    assert [t.name for t in tools] == ["wrk", bench.BASELINE, bench.PREVIOUS, "hey"]
    rows = [{"tool": bench.BASELINE, "median_rps": 98.0}, {"tool": bench.PREVIOUS, "median_rps": 100.0}]
    got = {v["label"]: v for v in bench.verdicts(rows)}["this build/previous build"]
    assert got["value"] == pytest.approx(0.98) and got["met"]
    assert "this build/previous build" not in {v["label"] for v in bench.verdicts(rows[:1])}
    with pytest.raises(ValueError, match="no such executable"):
        bench.with_previous(tools, str(tmp_path / "nope"))


def test_paired_ratio_cancels_drift_between_rounds():
    # the machine halves its speed after round 1: both tools move, their ratio does not
    runs = [bench.Run(tool=t, round=k, ok=True, rps=rps) for k, t, rps in (
        (1, "wrk", 100.0), (1, bench.BASELINE, 95.0),
        (2, "wrk", 50.0), (2, bench.BASELINE, 47.5),
        (3, "wrk", 50.0), (3, bench.BASELINE, 47.5))]
    rows = bench.summarize(["wrk", bench.BASELINE], runs)
    got = {v["label"]: v for v in bench.verdicts(rows, runs)}["loadtester/wrk"]
    assert got["value"] == pytest.approx(0.95)
    assert got["ratio_of_medians"] == pytest.approx(0.95)
    skewed = runs[:2] + [bench.Run(tool="wrk", round=2, ok=True, rps=50.0),
                         bench.Run(tool=bench.BASELINE, round=3, ok=True, rps=47.5)]
    assert bench.paired_ratio(skewed, bench.BASELINE, "wrk") == pytest.approx(0.95)


def test_https_rows_are_selected_together_and_aimed_at_the_tls_urls(tmp_path):
    tools = bench.select_tools("https")
    assert [t.name for t in tools] == [bench.WRK_HTTPS, bench.HTTPS, bench.HEY_HTTPS_CLOSE,
                                       bench.HTTPS_CLOSE]            # judged pairs adjacent
    ctx = bench.Ctx(url="http://127.0.0.1:1/", connections=7, duration_s=2.0, tmpdir=tmp_path,
                    wrk2_rate=1, https_url="https://127.0.0.1:2/",
                    https_close_url="https://127.0.0.1:3/")
    argv = {t.name: t.argv(["X"], ctx) for t in tools}
    assert argv[bench.WRK_HTTPS] == ["X", "-t1", "-c7", "-d2s", "--latency",
                                     "https://127.0.0.1:2/"]
    assert argv[bench.HTTPS][:3] == ["X", "blast", "https://127.0.0.1:2/"]
    assert argv[bench.HTTPS][-1] == "--insecure" and "-c" in argv[bench.HTTPS]
    assert argv[bench.HEY_HTTPS_CLOSE] == ["X", "-c", "7", "-z", "2s", "https://127.0.0.1:3/"]
    assert argv[bench.HTTPS_CLOSE][2] == "https://127.0.0.1:3/"
    assert argv[bench.HTTPS_CLOSE][-1] == "--insecure"
    assert [t.needs for t in tools] == ["https_url", "https_url", "https_close_url",
                                        "https_close_url"]


def test_nginx_tls_servers_get_a_fresh_certificate(tmp_path):
    text, https_url, close_url = bench.nginx_tls_servers(tmp_path)
    https_port, close_port = https_url.rsplit(":", 1)[1].strip("/"), close_url.rsplit(":", 1)[1]
    assert f"listen 127.0.0.1:{https_port} ssl;" in text
    assert f"listen 127.0.0.1:{close_port.strip('/')} ssl;\n        keepalive_timeout 0;" in text
    assert (tmp_path / "cert.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    conf = bench.NGINX_CONF.format(tmp=tmp_path, host="127.0.0.1", port=1, worker_connections=64,
                                   tls_servers=text)
    assert conf.count("server {") == 3 and f"ssl_certificate {tmp_path / 'cert.pem'};" in conf


def test_https_verdicts_judge_rps_and_cpu_per_request():
    runs = [bench.Run(tool=t, round=k, ok=True, rps=rps, requests=int(rps * 5), cpu_s=cpu)
            for k, t, rps, cpu in (
                (1, bench.WRK_HTTPS, 80_000.0, 4.0), (1, bench.HTTPS, 76_000.0, 4.2),
                (2, bench.WRK_HTTPS, 40_000.0, 2.0), (2, bench.HTTPS, 38_000.0, 2.1),
                (1, bench.HEY_HTTPS_CLOSE, 2_000.0, 3.0), (1, bench.HTTPS_CLOSE, 1_700.0, 2.0))]
    rows = bench.summarize([bench.WRK_HTTPS, bench.HTTPS, bench.HEY_HTTPS_CLOSE,
                            bench.HTTPS_CLOSE], runs)
    got = {v["label"]: v for v in bench.verdicts(rows, runs)}
    assert got["loadtester https/wrk https"]["value"] == pytest.approx(0.95)
    assert got["loadtester https/wrk https"]["met"]
    close = got["loadtester https close/hey https close"]
    assert close["value"] == pytest.approx(0.85) and close["met"] is False
    cpu = got["CPU per request: loadtester https/wrk https"]
    # (4.2 / 380,000) / (4.0 / 400,000) = 1.105: at most 1.20 is met
    assert cpu["at_most"] and cpu["value"] == pytest.approx(1.105, rel=1e-3) and cpu["met"]
    doc = {"meta": {"date": "d", "target": "nginx", "target_version": None, "url": "u",
                    "target_cpu": 0, "generator_cpu": 1, "cores": 2, "cpu_model": None,
                    "connections": 50, "duration_s": 5, "rounds": 2, "loadavg_start": None,
                    "missing_tools": [], "tools": [r["tool"] for r in rows]},
           "rows": rows, "verdicts": list(got.values())}
    text = bench.render(doc)
    assert "CPU per request: loadtester https/wrk https = 1.11 (goal ≤ 1.20)  ok" in text
    assert "loadtester https close/hey https close = 0.85 (goal ≥ 0.90)  MISSED" in text
    assert "https rows: TLSv1.3" in text


def test_https_rows_are_skipped_and_said_so_without_nginx(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--rounds", "1", "--duration", "1s",
         "--connections", "5", "--tools", "loadtester-none,https", "--target", "loadtester",
         "--json-only", "--no-save"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "HTTPS rows need nginx and openssl" in result.stderr
    doc = json.loads(result.stdout)
    assert [r["tool"] for r in doc["rows"]] == [bench.BASELINE]
    assert set(doc["meta"]["missing_tools"]) >= {bench.WRK_HTTPS, bench.HTTPS,
                                                  bench.HEY_HTTPS_CLOSE, bench.HTTPS_CLOSE}


def test_smoke_run_against_the_loadtester_target(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--rounds", "1", "--duration", "1s",
         "--connections", "10", "--tools", "loadtester", "--target", "loadtester",
         "--json-only"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["meta"]["target"] == "loadtester"
    assert doc["meta"]["connections"] == 10 and doc["meta"]["duration_s"] == 1
    rows = {r["tool"]: r for r in doc["rows"]}
    base = rows[bench.BASELINE]
    assert base["runs_ok"] == 1 and base["median_rps"] > 0, base
    assert base["median_p99_ms"] > 0 and base["cpu_s_per_100k"] > 0
    assert rows[bench.STORED]["median_rps"] > 0, rows[bench.STORED]
    saved = ROOT / doc["results_file"]
    try:
        assert json.loads(saved.read_text())["rows"] == doc["rows"]
    finally:
        saved.unlink()


def test_variants_row_sends_100000_urls_and_its_rss_is_judged(tmp_path):
    ctx = bench.Ctx(url="http://127.0.0.1:9/", connections=5, duration_s=1.0, tmpdir=tmp_path,
                    wrk2_rate=0)
    argv = bench._loadtester_variants_argv(["loadtester"], ctx)
    assert "http://127.0.0.1:9/?v={{id}}" in argv and "--store" in argv
    data = Path(argv[argv.index("--data") + 1]).read_text().splitlines()
    assert data[0] == "id" and len(data) == bench.VARIANT_ROWS + 1
    runs = [bench.Run(tool=t, round=k, ok=True, rps=1.0, extra={"max_rss_kb": kb})
            for k, t, kb in ((1, bench.BASELINE, 30_000), (1, bench.VARIANTS, 30_000 + 40 * 1024),
                             (2, bench.BASELINE, 31_000), (2, bench.VARIANTS, 31_000 + 70 * 1024))]
    verdict = bench.rss_verdict(runs)
    assert verdict["value"] == pytest.approx(55.0) and verdict["met"]
    assert "100k variants/single URL" in {v["label"] for v in bench.verdicts([])}
