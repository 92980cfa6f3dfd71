"""A drop-in for clients of the original PipeOps Load Tester API.

Request: POST /api/start also takes the original body
    {host, mask_host, users, ramp_up_sec, duration, auth, method, body, headers,
     max_concurrent_requests, error_threshold}  (+ this API's label and thresholds)
which translate() turns into this API's body (validation.validate_start checks the result):

    host                     url: kept when it has a scheme; else http:// for host:port, for
                             localhost and for loopback/private addresses, https:// for other
                             names (what the original's normalizeHost added)
    users                    users (connections)
    ramp_up_sec              ramp_up (seconds)
    duration                 duration (seconds)
    max_concurrent_requests  requests per second per user (the original paced each user so):
                             an open-loop rate of users x that; absent or 0: 10, the
                             original's default; at most 100 (the original's cap)
    error_threshold          abort_on_error_rate: the original's percentage (50 = 50%; "50%"
                             too; a bare 0.5 is 0.5%, as it was); 0 or absent: no breaker
    auth, method, body, headers, mask_host   as they are (auth: jwt, basic, header)

Responses: {test_id, test_uuid, status: "started"} (endpoints), the flat totals of
GET /api/metrics and /api/historical-metrics (flat_metrics, historical_metrics) and the
original's time series (timeseries_points)."""
from __future__ import annotations

import datetime as _dt
import ipaddress
import math
from typing import Any

from loadtester.units import iso_utc, parse_iso_utc
from loadtester.web.errors import ApiError
from loadtester.web.validation import DEFAULT_USERS, MAX_URL, check_users

PIPEOPS_FIELDS = ("host", "mask_host", "users", "ramp_up_sec", "duration", "auth", "method", "body",
                  "headers", "max_concurrent_requests", "error_threshold")
EXTRA_FIELDS = ("label", "thresholds")           # this API's, welcome in the original body too
PASSED_AS_IS = ("mask_host", "users", "duration", "auth", "method", "body", "headers",
                *EXTRA_FIELDS)
DEFAULT_PER_USER_RATE = 10                       # the original: one request per 100 ms per user
MAX_PER_USER_RATE = 100


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def is_pipeops_body(payload: object) -> bool:
    """Whether a POST /api/start body is the original's (it names the target `host`)."""
    return isinstance(payload, dict) and "host" in payload and "url" not in payload


def normalize_host(host: str) -> str:
    """The original's normalizeHost: the URL a `host` field stands for."""
    host = host.strip()
    if host.lower().startswith(("http://", "https://")):
        return host
    if ":" in host:
        return "http://" + host
    name = host.split("/", 1)[0]
    try:
        local = ipaddress.ip_address(name).is_private
    except ValueError:
        local = name.lower() == "localhost"
    return ("http://" if local else "https://") + host


def _per_user_rate(value: object) -> float:
    if value is None or value == 0:
        return DEFAULT_PER_USER_RATE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= MAX_PER_USER_RATE:
        raise _bad(f"max_concurrent_requests must be a number of requests per second per user "
                   f"from 1 to {MAX_PER_USER_RATE} (0 or absent: {DEFAULT_PER_USER_RATE})")
    return float(value)


def _error_threshold(value: object) -> float | None:
    """error_threshold (the original's percentage: 50 or "50%") as a share; None: no
    circuit breaker."""
    wrong = _bad("error_threshold must be a percentage of failed requests above 0 and at most "
                 "100 (50 or '50%'), or 0 for no circuit breaker")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text[:-1]) if text.endswith("%") else math.nan
        except ValueError:
            raise wrong from None
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= 100:
        raise wrong
    return float(value) / 100


def translate(payload: dict[str, Any]) -> dict[str, Any]:
    """The original body as this API's (see the module's table); unknown fields are a 400."""
    unknown = sorted(str(k) for k in payload if k not in PIPEOPS_FIELDS + EXTRA_FIELDS)
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r} in a PipeOps-style body (one with host); its "
                   f"fields are {', '.join(PIPEOPS_FIELDS + EXTRA_FIELDS)}")
    host = payload["host"]
    if not isinstance(host, str) or not host.strip():
        raise _bad("host is required: a host name, host:port or an http(s):// URL")
    if len(host) > MAX_URL:
        raise _bad(f"host is longer than {MAX_URL} characters")
    body: dict[str, Any] = {k: payload[k] for k in PASSED_AS_IS if k in payload}
    body["url"] = normalize_host(host)
    if payload.get("ramp_up_sec") is not None:
        body["ramp_up"] = payload["ramp_up_sec"]
    users = check_users(payload) if "users" in payload else DEFAULT_USERS
    body["rate"] = users * _per_user_rate(payload.get("max_concurrent_requests"))
    share = _error_threshold(payload.get("error_threshold"))
    if share is not None:
        body["abort_on_error_rate"] = share
    return body


# --------------------------------------------------------------------------- responses

def _number(value: object) -> float:
    """A figure as the original sent it: 0 when there is none."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def flat_metrics(report: dict[str, Any], p95_ms: float | None,
                 duration: float | None) -> dict[str, Any]:
    """The original's flat /api/metrics keys from a run report (analysis.report's shape plus
    the API's status and result fields): latencies in ms, error_rate in percent, 0 where
    there is no value (as the original had it)."""
    attempts = int(report.get("attempts") or 0)
    successes = int(report.get("successes") or 0)
    errors = attempts - successes
    latency = report.get("latency_ms") or {}
    p50, p99, p95 = _number(latency.get("p50")), _number(latency.get("p99")), _number(p95_ms)
    return {
        "total_requests": attempts, "success_count": successes, "error_count": errors,
        "avg_latency": _number(latency.get("avg")), "min_latency": _number(latency.get("min")),
        "max_latency": _number(latency.get("max")),
        "p50_latency": p50, "p95_latency": p95, "p99_latency": p99,
        "p50": p50, "p95": p95, "p99": p99,
        "error_rate": 100.0 * errors / attempts if attempts else 0.0,
        "avg_rps": _number(report.get("rps")), "duration": _number(duration),
        "is_running": report.get("status") == "running",
        "stopped_by_circuit": bool(report.get("stopped_by_circuit")),
    }


def timeseries_points(rows: list[dict[str, Any]], started_at: str | None) -> list[dict[str, Any]]:
    """The original's time series: {timestamp (ISO UTC, the start of the second), requests
    (attempts), rps (responses), avg_latency (ms), success_rate (percent)} per second."""
    start = parse_iso_utc(started_at)
    points = []
    for row in rows:
        moment = start + _dt.timedelta(seconds=row["second"] - 1) if start else None
        rate = row.get("success_rate")
        points.append({
            "timestamp": iso_utc(moment) if moment else None,
            "requests": row.get("requests") or 0, "rps": _number(row.get("rps")),
            "avg_latency": _number(row.get("avg_ms")),
            "success_rate": 100.0 * rate if rate is not None else 0.0,
        })
    return points


def historical_metrics(metrics: dict[str, Any], status: dict[str, Any],
                       rows: list[dict[str, Any]], host: str | None) -> dict[str, Any]:
    """GET /api/historical-metrics: the original's flat totals and its time series, with this
    API's uuid, status and result beside them.  metrics: the /api/metrics payload; status:
    the /api/status payload; host: as shown (masked when the run asked for it)."""
    keys = ("total_requests", "success_count", "error_count", "avg_latency", "min_latency",
            "max_latency", "p50_latency", "p95_latency", "p99_latency", "error_rate",
            "stopped_by_circuit")
    return {
        "id": status.get("id"), "uuid": status.get("uuid"), "host": host,
        **{k: metrics.get(k) for k in keys},
        "rps": _number(metrics.get("rps")), "duration": status.get("duration"),
        "started_at": status.get("started_at"), "completed_at": status.get("completed_at"),
        "status": status.get("status"), "result": status.get("result"),
        "time_series": timeseries_points(rows, status.get("started_at")),
    }
