"""Thresholds: parsing every form, evaluating on synthetic and on real reports."""
from __future__ import annotations

import pytest

from conftest import blast_json, free_port
from loadtester.analysis.thresholds import (Threshold, ThresholdError, evaluate, parse_threshold,
                                            render)


@pytest.mark.parametrize("text, metric, op, limit, unit", [
    ("p99<200ms", "p99", "<", 200.0, "ms"),
    ("p50<=1s", "p50", "<=", 1000.0, "ms"),
    ("p99.9<500ms", "p99.9", "<", 500.0, "ms"),
    ("p999<500ms", "p99.9", "<", 500.0, "ms"),
    ("p75<250us", "p75", "<", 0.25, "ms"),
    ("p90 < 1.5 s", "p90", "<", 1500.0, "ms"),
    ("p95<300ms", "p95", "<", 300.0, "ms"),
    ("avg<50ms", "avg", "<", 50.0, "ms"),
    ("avg<50", "avg", "<", 50.0, "ms"),            # bare number: milliseconds
    ("min>=1ms", "min", ">=", 1.0, "ms"),
    ("max<2s", "max", "<", 2000.0, "ms"),
    ("stdev<5ms", "stdev", "<", 5.0, "ms"),
    ("P99<200MS", "p99", "<", 200.0, "ms"),
    ("errors<1%", "errors", "<", 1.0, "%"),
    ("errors<0.5%", "errors", "<", 0.5, "%"),
    ("errors<=10", "errors", "<=", 10.0, "count"),
    ("success>99%", "success", ">", 99.0, "%"),
    ("success>=99.9%", "success", ">=", 99.9, "%"),
    ("rps>1000", "rps", ">", 1000.0, "req/s"),
    ("rps>=1000", "rps", ">=", 1000.0, "req/s"),
])
def test_parse_forms(text, metric, op, limit, unit):
    t = parse_threshold(text)
    assert (t.metric, t.op, t.unit) == (metric, op, unit)
    assert t.limit == pytest.approx(limit)
    assert " " not in t.expression


@pytest.mark.parametrize("text", [
    "", "p99", "p99<", "<200ms", "p99=200ms", "p99<<200ms", "p99<200ms extra", "p98<200ms",
    "latency<200ms", "p99<200%", "p99<200 minutes", "errors<1.5", "errors<1ms", "errors<150%",
    "success>99", "success>0.99", "rps>1000ms", "rps>10%", "p99<-5ms", "p99<abc",
])
def test_bad_expressions_raise_one_line(text):
    with pytest.raises(ThresholdError) as info:
        parse_threshold(text)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "\n" not in message and message.startswith("invalid threshold")


def _report(**over):
    report = {
        "mode": "closed", "requests": 1000, "attempts": 1000, "successes": 990, "errors": 10,
        "success_rate": 0.99, "rps": 500.0,
        "latency_ms": {"min": 1.0, "avg": 12.0, "stdev": 2.0, "p50": 11.0, "p75": 12.5,
                       "p90": 14.0, "p99": 20.0, "p999": 40.0, "max": 55.0},
        "errors_by_kind": {},
    }
    report.update(over)
    return report


def test_evaluate_synthetic():
    report = _report()
    results = evaluate(report, [parse_threshold(t) for t in (
        "p99<200ms", "p99<20ms", "p99<=20ms", "p99.9<0.04s", "p999<=40", "avg<50ms",
        "max<2s", "min>=1ms", "stdev<1ms", "errors<1%", "errors<=1%", "errors<=10", "errors<10",
        "success>99%", "success>=99%", "rps>1000", "rps>=500", "p50<11000us")])
    got = {r["expression"]: r["passed"] for r in results}
    assert got == {
        "p99<200ms": True, "p99<20ms": False, "p99<=20ms": True, "p99.9<0.04s": False,
        "p999<=40": True, "avg<50ms": True, "max<2s": True, "min>=1ms": True,
        "stdev<1ms": False, "errors<1%": False, "errors<=1%": True, "errors<=10": True,
        "errors<10": False, "success>99%": False, "success>=99%": True, "rps>1000": False,
        "rps>=500": True, "p50<11000us": False,
    }
    by = {r["expression"]: r for r in results}
    assert by["errors<1%"]["actual"] == pytest.approx(1.0)
    assert by["errors<=10"]["actual"] == 10
    assert by["success>99%"]["actual"] == pytest.approx(99.0)
    assert set(by["p99<200ms"]) >= {"expression", "metric", "op", "limit", "actual", "passed"}
    # strings are accepted as well as Threshold objects
    assert evaluate(report, ["p99<200ms"])[0]["passed"] is True


def test_missing_values_fail():
    empty_latency = {k: None for k in ("min", "avg", "stdev", "p50", "p75", "p90", "p99", "p999", "max")}
    no_responses = _report(requests=0, attempts=5, successes=0, errors=5, success_rate=0.0,
                           rps=0.0, latency_ms=empty_latency, errors_by_kind={"connect": 5})
    results = evaluate(no_responses, ["p99<200ms", "avg<1s", "max<10s", "errors<=10", "rps<1000"])
    assert [r["passed"] for r in results] == [False, False, False, True, True]
    assert results[0]["actual"] is None
    nothing = _report(requests=0, attempts=0, successes=0, errors=0, success_rate=0.0, rps=0.0,
                      latency_ms=empty_latency)
    assert not any(r["passed"] for r in evaluate(nothing, ["p99<200ms", "errors<=10", "errors<1%",
                                                           "success>=0%", "rps>=0"]))


def test_render_lines():
    results = evaluate(_report(), ["p99<200ms", "errors<1%"])
    lines = render(results).splitlines()
    assert lines[0] == "  Thresholds   p99<200ms  pass (actual 20.00ms)"
    assert lines[1].startswith("               errors<1%  FAIL (actual 1.00%)")
    assert render([]) == ""
    assert "none (no responses)" in render(evaluate(_report(attempts=0), ["p99<1s"]))


def test_threshold_is_frozen_value():
    t = parse_threshold("p99<200ms")
    assert t == Threshold("p99<200ms", "p99", "<", 200.0, "ms")
    assert t.check(199.9) and not t.check(200.0) and not t.check(None)


# --------------------------------------------------------------------------- real reports

def test_real_closed_loop_report(start_target, db):
    target = start_target("--delay", "10ms")
    report = blast_json(target.url, "-d", "1s", "-c", "5", "--no-progress", db=db)
    results = {r["expression"]: r for r in evaluate(report, [
        "p99<200ms", "p50<5ms", "p50>=10ms", "errors<1%", "errors<=0", "success>99%",
        "rps>10", "rps>100000", "max<2s"])}
    assert results["p99<200ms"]["passed"] and results["p50>=10ms"]["passed"]
    assert not results["p50<5ms"]["passed"]
    assert results["p50<5ms"]["actual"] == report["latency_ms"]["p50"]
    assert results["errors<1%"]["passed"] and results["errors<=0"]["passed"]
    assert results["success>99%"]["passed"] and results["rps>10"]["passed"]
    assert not results["rps>100000"]["passed"]
    assert results["rps>10"]["actual"] == pytest.approx(report["rps"])


def test_real_p95_threshold_from_the_cli(start_target, db):
    # p95 is in the report (issue 13: p95 in the percentile table), so it is a threshold too:
    # the same grammar in the CLI and the web form.
    target = start_target("--delay", "10ms")
    report = blast_json(target.url, "-n", "200", "-c", "4", "--no-progress",
                        "--threshold", "p95<5s", "--threshold", "p95<1ms", db=db, exit_code=1)
    results = {r["expression"]: r for r in report["thresholds"]}
    assert results["p95<5s"]["passed"] and not results["p95<1ms"]["passed"]
    assert results["p95<1ms"]["actual"] == report["latency_ms"]["p95"] >= 10.0


def test_real_error_report(start_target, db):
    target = start_target("--status", "500")
    report = blast_json(target.url, "-n", "200", "-c", "4", "--no-progress", db=db, exit_code=1)
    results = evaluate(report, ["errors<1%", "errors<=10", "success>99%", "p99<1s", "errors>=100%"])
    assert [r["passed"] for r in results] == [False, False, False, True, True]
    assert results[1]["actual"] == 200 and results[0]["actual"] == pytest.approx(100.0)


def test_real_rate_mode_uses_corrected_latency(start_target, db):
    target = start_target("--delay", "5ms")
    report = blast_json(target.url, "--rate", "200", "-d", "1s", "-c", "4", "--no-progress", db=db)
    assert report["mode"] == "rate" and "uncorrected_latency_ms" in report
    result = evaluate(report, ["p99<1s"])[0]
    assert result["actual"] == report["latency_ms"]["p99"]


def test_real_no_responses_fail(db):
    url = f"http://127.0.0.1:{free_port()}/"          # nothing listens: connect errors only
    report = blast_json(url, "-n", "5", "-c", "1", "--no-progress", db=db, exit_code=1)
    assert report["requests"] == 0
    results = evaluate(report, ["p99<200ms", "avg<1s", "success>=0%", "errors<=5"])
    assert [r["passed"] for r in results] == [False, False, True, True]
    assert "none (no responses)" in render(results)
