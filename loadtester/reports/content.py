"""What both reports show, as text: the verdict, the key numbers, the latency table, status
codes and errors, thresholds (htmlreport and pdfreport lay these out; the numbers are formatted
here, once, as the dashboard shows them: µs, thousands separators, times labelled UTC)."""
from __future__ import annotations

from loadtester.analysis.report import LATENCY_COLUMNS
from loadtester.analysis.thresholds import format_value
from loadtester.analysis.verdict import FAILED, NO_THRESHOLDS, PASSED
from loadtester.units import format_bytes, format_ms, format_utc

LATENCY_KEYS = LATENCY_COLUMNS           # (latency_ms key, column name)
# The verdict as the reports name it, and its colour class (red, green, neutral).
RESULT_TITLES = {FAILED: ("Failed", "bad"), PASSED: ("Passed", "good"),
                 NO_THRESHOLDS: ("No thresholds", "neutral")}
NO_RESPONSES = "no responses"


def fmt_ms(value) -> str:
    return format_ms(value, sep=" ", micro="\u00b5s")


def fmt_int(value) -> str:
    return "-" if value is None else f"{int(value):,}"


def fmt_bytes(n) -> str:
    return format_bytes(n, sep=" ", digits=2)


def fmt_pct(fraction) -> str:
    return "-" if fraction is None else f"{fraction * 100:.2f}%"


def result_line(data: dict) -> tuple[str, str, str] | None:
    """(title, colour class, reason) of the run's verdict; None while it runs."""
    result = data.get("result")
    if result not in RESULT_TITLES:
        return None
    title, tone = RESULT_TITLES[result]
    return title, tone, str(data.get("result_reason") or "")


def run_times(data: dict) -> str:
    """'started 2025-11-25 01:40:00 UTC · ended ...'."""
    return (f"started {format_utc(data.get('started_at'))} \u00b7 "
            f"ended {format_utc(data.get('completed_at'))}")


def key_numbers(data: dict) -> list[tuple[str, str]]:
    r = data["report"]
    latency = r.get("latency_ms") or {}
    verdict = result_line(data)
    rows = [
        ("Status", str(data.get("status") or r.get("status") or "-")),
        ("Result", verdict[0] if verdict else "-"),
        ("Requests completed", fmt_int(r.get("requests"))),
        ("Attempts", fmt_int(r.get("attempts"))),
        ("Successes", fmt_int(r.get("successes"))),
        ("Errors", fmt_int(r.get("errors"))),
        ("Success rate", fmt_pct(r.get("success_rate"))),
        ("Throughput", f"{r.get('rps') or 0:,.2f} req/s"),
        ("Latency p50", fmt_ms(latency.get("p50"))),
        ("Latency p95", fmt_ms(latency.get("p95"))),
        ("Transfer", f"{fmt_bytes(r.get('bytes_per_s') or 0)}/s"),
        ("Measured duration", f"{r.get('duration_s') or 0:,.2f} s"),
        ("Virtual users", fmt_int(data.get("users") if data.get("users") is not None
                                  else r.get("connections"))),
        ("Load model", f"open loop at {r['rate']:,g} req/s" if r.get("mode") == "rate"
         else "closed loop"),
        ("Method", str(data.get("method") or r.get("method") or "GET")),
    ]
    return rows


def latency_rows(report: dict) -> list[tuple[str, list[str]]]:
    """[(title, [value per LATENCY_KEYS])]: corrected latency, and uncorrected in open loop."""
    out = [("Latency", [fmt_ms((report.get("latency_ms") or {}).get(k)) for k, _ in LATENCY_KEYS])]
    if report.get("uncorrected_latency_ms"):
        out[0] = ("Latency (corrected)", out[0][1])
        out.append(("Uncorrected", [fmt_ms(report["uncorrected_latency_ms"].get(k))
                                    for k, _ in LATENCY_KEYS]))
    return out


def status_rows(report: dict) -> list[tuple[str, str]]:
    """(status code or 'error: kind - its first message', count)."""
    messages = report.get("error_messages") or {}
    rows = [(str(code), fmt_int(count)) for code, count in (report.get("status_codes") or {}).items()]
    rows += [(f"error: {kind}" + (f" - {messages[kind]}" if messages.get(kind) else ""),
              fmt_int(count))
             for kind, count in (report.get("errors_by_kind") or {}).items()]
    return rows


def threshold_rows(report: dict) -> list[tuple[str, str, str]]:
    """(expression, 'pass' or 'FAIL', actual value) of each threshold the run was judged by."""
    return [(str(t.get("expression")), "pass" if t.get("passed") else "FAIL",
             format_value(t.get("actual"), str(t.get("unit") or "ms")))
            for t in report.get("thresholds") or [] if isinstance(t, dict)]
