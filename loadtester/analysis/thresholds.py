"""Pass/fail thresholds on a report: `p99<200ms`, `errors<1%`, `rps>=1000`, ...

    thresholds = [parse_threshold(t) for t in ("p99<200ms", "errors<1%")]
    results = evaluate(report, thresholds)      # report: the dict report.summarize() returns
    print(render(results))
    ok = all(r["passed"] for r in results)

Metrics (case-insensitive):
  latency   p50 p75 p90 p95 p99 p99.9 (or p999), avg, min, max, stdev — from report["latency_ms"],
            which in rate mode is the *corrected* latency (from the intended send time).
            Limits take us / ms / s; a bare number means milliseconds.
  errors    errors<1% (share of attempts) or errors<=10 (a count).
  success   success>99% (share of attempts; a percentage is required).
  rps       rps>1000, rps>=1000 (completed responses per second).
Operators: < <= > >=.  A threshold whose value is missing (no responses, so no latency; or
no attempts at all) fails.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from loadtester.units import format_ms

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

# metric name as written -> key in report["latency_ms"]
LATENCY_METRICS = {
    "p50": "p50", "p75": "p75", "p90": "p90", "p95": "p95", "p99": "p99", "p99.9": "p999",
    "p999": "p999",
    "avg": "avg", "mean": "avg", "min": "min", "max": "max", "stdev": "stdev",
}
OTHER_METRICS = ("errors", "success", "rps")
METRIC_NAMES = "p50, p75, p90, p95, p99, p99.9, avg, min, max, stdev, errors, success, rps"

_UNIT_MS = {"us": 0.001, "µs": 0.001, "μs": 0.001, "ms": 1.0, "s": 1000.0}

_EXPR_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z][A-Za-z0-9.]*)\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-zµμ%/]*)\s*$")


class ThresholdError(ValueError):
    """A threshold expression that cannot be parsed; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass(frozen=True)
class Threshold:
    expression: str          # as written, without blanks: "p99<200ms"
    metric: str              # canonical: p50 p75 p90 p95 p99 p99.9 avg min max stdev errors success rps
    op: str                  # < <= > >=
    limit: float             # in `unit`
    unit: str                # "ms" (latency), "%" (errors/success share), "count" (errors), "req/s"

    def check(self, actual: float | None) -> bool:
        if actual is None or (isinstance(actual, float) and math.isnan(actual)):
            return False
        return OPS[self.op](actual, self.limit)


def parse_threshold(text: str) -> Threshold:
    """'p99<200ms' -> Threshold; ThresholdError (a ValueError) with a one-line message otherwise."""
    raw = str(text)
    shown = " ".join(raw.split())
    match = _EXPR_RE.match(raw)
    if not match:
        raise ThresholdError(
            f"invalid threshold {shown!r}: write METRIC OP VALUE, e.g. p99<200ms, errors<1%, "
            f"rps>=1000 (metrics: {METRIC_NAMES}; operators: < <= > >=)")
    metric = match.group("metric").lower()
    op = match.group("op")
    number = float(match.group("number"))
    unit = match.group("unit")
    expression = f"{metric}{op}{match.group('number')}{unit}"

    if metric in LATENCY_METRICS:
        canonical = "p99.9" if metric == "p999" else ("avg" if metric == "mean" else metric)
        if unit == "":
            factor = 1.0                                   # a bare number means milliseconds
        elif unit.lower() in _UNIT_MS:
            factor = _UNIT_MS[unit.lower()]
        else:
            raise ThresholdError(f"invalid threshold {shown!r}: {metric} takes a duration "
                                 f"(us, ms or s; a bare number means ms), not {unit!r}")
        return Threshold(expression, canonical, op, number * factor, "ms")
    if metric in ("errors", "error"):
        if unit == "%":
            _check_percent(shown, number)
            return Threshold(expression, "errors", op, number, "%")
        if unit == "":
            if number != int(number):
                raise ThresholdError(f"invalid threshold {shown!r}: an error count is a whole "
                                     "number; for a share write a percentage, e.g. errors<1%")
            return Threshold(expression, "errors", op, number, "count")
        raise ThresholdError(f"invalid threshold {shown!r}: errors takes a percentage (errors<1%) "
                             f"or a count (errors<=10), not {unit!r}")
    if metric in ("success", "successes"):
        if unit != "%":
            raise ThresholdError(f"invalid threshold {shown!r}: success takes a percentage, "
                                 "e.g. success>99%")
        _check_percent(shown, number)
        return Threshold(expression, "success", op, number, "%")
    if metric == "rps":
        if unit not in ("", "/s", "req/s", "rps"):
            raise ThresholdError(f"invalid threshold {shown!r}: rps takes a plain number of "
                                 f"requests per second, not {unit!r}")
        return Threshold(expression, "rps", op, number, "req/s")
    raise ThresholdError(f"invalid threshold {shown!r}: unknown metric {metric!r} "
                         f"(use one of {METRIC_NAMES})")


def _check_percent(shown: str, number: float) -> None:
    if number > 100:
        raise ThresholdError(f"invalid threshold {shown!r}: a percentage is at most 100%")


def actual_value(report: dict[str, Any], threshold: Threshold) -> float | None:
    """The report's value for the threshold's metric, in its unit; None when there is none."""
    attempts = report.get("attempts")
    if attempts is None:
        attempts = (report.get("requests") or 0) + sum((report.get("errors_by_kind") or {}).values())
    if not attempts:
        return None                                       # nothing was measured at all
    if threshold.unit == "ms":
        key = LATENCY_METRICS[threshold.metric]
        latency: float | None = (report.get("latency_ms") or {}).get(key)
        return latency
    if threshold.metric == "errors":
        errors: float | None = report.get("errors")
        if errors is None:
            return None
        return errors if threshold.unit == "count" else 100.0 * errors / attempts
    if threshold.metric == "success":
        rate = report.get("success_rate")
        return None if rate is None else 100.0 * rate
    if threshold.metric == "rps":
        rps: float | None = report.get("rps")
        return rps
    return None


def evaluate(report: dict[str, Any], thresholds: Iterable[Threshold | str]) -> list[dict[str, Any]]:
    """[{expression, metric, op, limit, unit, actual, passed}] in the order given.

    `thresholds` may hold Threshold objects or expression strings."""
    results = []
    for t in thresholds:
        if not isinstance(t, Threshold):
            t = parse_threshold(t)
        actual = actual_value(report, t)
        results.append({"expression": t.expression, "metric": t.metric, "op": t.op,
                        "limit": t.limit, "unit": t.unit, "actual": actual,
                        "passed": t.check(actual)})
    return results


def all_passed(results: Iterable[dict[str, Any]]) -> bool:
    return all(r["passed"] for r in results)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "none (no responses)"
    if unit == "ms":
        return format_ms(value)
    if unit == "%":
        return f"{value:.3g}%" if value < 1 else f"{value:.2f}%"
    if unit == "count":
        return f"{int(value):,}"
    return f"{value:,.1f} req/s"


def render(results: list[dict[str, Any]]) -> str:
    """Text lines for the report: '  Thresholds   p99<200ms  pass (actual 12.3ms)'."""
    if not results:
        return ""
    width = max(len(r["expression"]) for r in results)
    lines = []
    for i, r in enumerate(results):
        title = "Thresholds" if i == 0 else ""
        verdict = "pass" if r["passed"] else "FAIL"
        lines.append(f"  {title:<13}{r['expression']:<{width}}  {verdict} "
                     f"(actual {format_value(r['actual'], r['unit'])})")
    return "\n".join(lines)
