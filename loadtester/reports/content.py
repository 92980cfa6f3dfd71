"""What both reports show, as text: the key numbers, the latency table, status codes and
errors (htmlreport and pdfreport lay these out; the numbers are formatted here, once)."""
from __future__ import annotations

from loadtester.analysis.report import LATENCY_COLUMNS
from loadtester.units import format_bytes, format_ms

LATENCY_KEYS = LATENCY_COLUMNS           # (latency_ms key, column name)


def fmt_ms(value) -> str:
    return format_ms(value, sep=" ")


def fmt_int(value) -> str:
    return "-" if value is None else f"{int(value):,}"


def fmt_bytes(n) -> str:
    return format_bytes(n, sep=" ", digits=2)


def fmt_pct(fraction) -> str:
    return "-" if fraction is None else f"{fraction * 100:.2f}%"


def key_numbers(data: dict) -> list[tuple[str, str]]:
    r = data["report"]
    rows = [
        ("Status", str(data.get("status") or r.get("status") or "-")),
        ("Requests completed", fmt_int(r.get("requests"))),
        ("Attempts", fmt_int(r.get("attempts"))),
        ("Successes", fmt_int(r.get("successes"))),
        ("Errors", fmt_int(r.get("errors"))),
        ("Success rate", fmt_pct(r.get("success_rate"))),
        ("Throughput", f"{r.get('rps') or 0:,.2f} req/s"),
        ("Transfer", f"{fmt_bytes(r.get('bytes_per_s') or 0)}/s"),
        ("Measured duration", f"{r.get('duration_s') or 0:.2f} s"),
        ("Virtual users", fmt_int(data.get("users") if data.get("users") is not None
                                  else r.get("connections"))),
        ("Load model", f"open loop at {r['rate']:g} req/s" if r.get("mode") == "rate"
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
    rows = [(str(code), fmt_int(count)) for code, count in (report.get("status_codes") or {}).items()]
    rows += [(f"error: {kind}", fmt_int(count))
             for kind, count in (report.get("errors_by_kind") or {}).items()]
    return rows
