"""The body of POST /api/start, checked: StartParams, validate_start() and the limits it
enforces.  Every problem is an ApiError(400) with one clear line; a field this API does not
know is refused, never ignored.  (The original PipeOps body is translated into this one by
loadtester.web.pipeops first.)"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from loadtester.analysis.thresholds import ThresholdError, parse_threshold
from loadtester.model import SpecError
from loadtester.reports.display import plain_number
from loadtester.spec import MAX_PIPELINE, check_pipeline, parse_rate, parse_url
from loadtester.units import UnitError, parse_duration_s
from loadtester.web.errors import ApiError
from loadtester.web.requestheaders import CONTROL_RE, check_headers
from loadtester.web.targetauth import auth_headers

MAX_USERS = 1000
MAX_DURATION_S = 3600
MAX_RATE = 100_000
MAX_BODY_BYTES = 1 << 20            # the test's request body
MAX_JSON_BYTES = 2 << 20            # the POST /api/start body itself
MAX_JSON_DEPTH = 16                 # nesting of that body (the deepest real one has 3)
MAX_LABEL = 200
MAX_URL = 2048
MAX_THRESHOLDS = 20
MAX_THRESHOLD_TEXT = 100
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_USERS = 10
DEFAULT_DURATION_S = 30.0

START_FIELDS = ("url", "users", "duration", "ramp_up", "rate", "pipeline", "method", "headers",
                "body", "auth", "mask_host", "insecure", "label", "thresholds",
                "abort_on_error_rate")
# PipeOps' names for fields this body spells differently (for the error message)
OUR_NAME_FOR = {"host": "url", "ramp_up_sec": "ramp_up", "max_concurrent_requests": "rate",
                "error_threshold": "abort_on_error_rate"}


@dataclass
class StartParams:
    url: str
    host: str
    users: int
    duration_s: float
    ramp_up_s: float | None = None
    rate: float | None = None
    pipeline: int = 1                                       # the CLI's --pipeline
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str | None = None
    mask_host: bool = False
    insecure: bool = False                                  # the CLI's --insecure (no TLS checks)
    label: str = ""
    thresholds: list[str] = field(default_factory=list)     # CLI expressions: "p99<200ms"
    abort_on_error_rate: float | None = None                # the circuit breaker, 0..1


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def seconds_value(value: object, what: str) -> float | None:
    """A number of seconds or a duration text ('30s'); None when not given."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad(f"{what} must be a number of seconds or a duration such as '30s'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration_s(value, what)
        except UnitError as exc:
            raise _bad(str(exc)) from None
    else:
        raise _bad(f"{what} must be a number of seconds or a duration such as '30s'")
    if not math.isfinite(seconds):
        raise _bad(f"{what} must be a finite number")
    return seconds


def _check_url(payload: dict[str, Any]) -> tuple[str, str]:
    """(url, host)."""
    url = payload.get("url")
    if not isinstance(url, str) or not url.strip():
        raise _bad("url is required: an http:// or https:// URL")
    url = url.strip()
    if len(url) > MAX_URL:
        raise _bad(f"url is longer than {MAX_URL} characters")
    if CONTROL_RE.search(url) or " " in url:
        raise _bad("url must not contain spaces or control characters")
    try:
        target = parse_url(url)
    except SpecError as exc:
        raise _bad(str(exc)) from None
    return url, target.host


def check_users(payload: dict[str, Any]) -> int:
    users = payload.get("users", DEFAULT_USERS)
    if isinstance(users, float) and users.is_integer():
        users = int(users)
    if isinstance(users, bool) or not isinstance(users, int):
        raise _bad(f"users must be a whole number from 1 to {MAX_USERS}")
    if not 1 <= users <= MAX_USERS:
        raise _bad(f"users must be from 1 to {MAX_USERS} (got {users})")
    return users


def _check_timing(payload: dict[str, Any]) -> tuple[float, float | None]:
    """(duration, ramp_up or None)."""
    duration = seconds_value(payload.get("duration"), "duration")
    if duration is None:
        duration = DEFAULT_DURATION_S
    if not 1 <= duration <= MAX_DURATION_S:
        raise _bad(f"duration must be from 1 to {MAX_DURATION_S} seconds "
                   f"(got {plain_number(duration)})")

    ramp_up = seconds_value(payload.get("ramp_up"), "ramp_up")
    if ramp_up is not None:
        if ramp_up < 0:
            raise _bad("ramp_up must not be negative")
        if ramp_up > duration:
            raise _bad(f"ramp_up ({plain_number(ramp_up)} s) must not be longer than the duration "
                       f"({plain_number(duration)} s)")
        if ramp_up == 0:
            ramp_up = None
    return duration, ramp_up


def _check_rate(payload: dict[str, Any]) -> float | None:
    rate = payload.get("rate")
    if rate is None:
        return None
    if isinstance(rate, bool):
        raise _bad("rate must be a number of requests per second")
    if isinstance(rate, str):
        try:
            rate = parse_rate(rate)
        except SpecError as exc:
            raise _bad(str(exc)) from None
    if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise _bad("rate must be a number of requests per second above 0")
    if rate > MAX_RATE:
        raise _bad(f"rate must be at most {MAX_RATE} requests per second")
    return float(rate)


def _check_pipeline(payload: dict[str, Any], rate: float | None) -> int:
    """`pipeline`: requests written at once on each connection (the CLI's --pipeline)."""
    depth = payload.get("pipeline")
    if depth is None:
        return 1
    if isinstance(depth, float) and depth.is_integer():
        depth = int(depth)
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise _bad(f"pipeline must be a whole number from 1 to {MAX_PIPELINE}")
    try:
        check_pipeline(depth, open_loop=rate is not None, rate_name="rate",
                       pipeline_name="pipeline")
    except SpecError as exc:
        raise _bad(str(exc)) from None
    return depth


def _check_method(payload: dict[str, Any]) -> str:
    method = payload.get("method") or "GET"
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise _bad(f"method must be one of {', '.join(METHODS)}")
    return method.upper()


def _check_flag(payload: dict[str, Any], name: str) -> bool:
    """A true/false field, false when absent (JSON's booleans only: not "yes", not 1)."""
    value = payload.get(name, False)
    if not isinstance(value, bool):
        raise _bad(f"{name} must be true or false")
    return value


def _check_body(payload: dict[str, Any]) -> str | None:
    body = payload.get("body")
    if body is None:
        return None
    if not isinstance(body, str):
        raise _bad("body must be a string")
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        raise _bad(f"body is larger than {MAX_BODY_BYTES} bytes (1 MiB)")
    return body or None


def check_thresholds(payload: dict[str, Any]) -> list[str]:
    """`thresholds`: a list of CLI threshold expressions ("p99<200ms", "errors<1%"), parsed by
    loadtester.analysis.thresholds (the CLI's grammar); their canonical spelling."""
    given = payload.get("thresholds")
    if given is None:
        return []
    if not isinstance(given, list) or not all(isinstance(t, str) for t in given):
        raise _bad('thresholds must be a list of strings such as ["p99<200ms", "errors<1%"]')
    if len(given) > MAX_THRESHOLDS:
        raise _bad(f"at most {MAX_THRESHOLDS} thresholds")
    expressions = []
    for text in given:
        if len(text) > MAX_THRESHOLD_TEXT or CONTROL_RE.search(text):
            raise _bad(f"a threshold is at most {MAX_THRESHOLD_TEXT} characters, no control "
                       "characters")
        try:
            expressions.append(parse_threshold(text).expression)
        except ThresholdError as exc:
            raise _bad(str(exc)) from None
    return list(dict.fromkeys(expressions))


def share_value(value: object, what: str, example: str) -> float | None:
    """A share of requests, 0 < share <= 1: a number (0.5) or a percentage text ('50%')."""
    if value is None:
        return None
    wrong = _bad(f"{what} must be a share of requests above 0 and at most 1 ({example}) "
                 "or a percentage ('50%')")
    if isinstance(value, bool):
        raise wrong
    if isinstance(value, str):
        text = value.strip()
        try:
            share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise wrong from None
    elif isinstance(value, (int, float)):
        share = float(value)
    else:
        raise wrong
    if not math.isfinite(share) or not 0 < share <= 1 or plain_number(share * 100) == "0":
        raise wrong
    return share


def nesting_depth(value: object) -> Iterator[int]:
    """The depth of every list and object in a parsed JSON value (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            yield depth
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            yield depth
            stack.extend((v, depth + 1) for v in item)


def check_depth(payload: object) -> None:
    """400 when the parsed body nests deeper than MAX_JSON_DEPTH."""
    for depth in nesting_depth(payload):
        if depth > MAX_JSON_DEPTH:
            raise _bad(f"the request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)")


def check_fields(payload: dict[str, Any]) -> None:
    """400 for a field this API does not know (the first one, in sorted order)."""
    unknown = sorted(str(k) for k in payload if k not in START_FIELDS)
    if not unknown:
        return
    name = unknown[0]
    hint = (f" (with url, this API calls it {OUR_NAME_FOR[name]}; the original PipeOps body "
            "uses host instead of url)") if name in OUR_NAME_FOR else ""
    raise _bad(f"unknown field {name!r}{hint}; the fields are {', '.join(START_FIELDS)}")


def validate_start(payload: object) -> StartParams:
    """The body of POST /api/start, checked; every problem is a 400 with one clear line."""
    if not isinstance(payload, dict):
        raise _bad("the request body must be a JSON object")
    check_depth(payload)
    if "url" in payload and "host" in payload:
        raise _bad("give url (this API) or host (the original PipeOps body), not both")
    check_fields(payload)
    url, host = _check_url(payload)
    users = check_users(payload)
    duration, ramp_up = _check_timing(payload)
    rate = _check_rate(payload)
    pipeline = _check_pipeline(payload, rate)
    method = _check_method(payload)
    headers = check_headers(payload.get("headers") or {})
    auth = payload.get("auth")
    if auth:
        headers += auth_headers(auth, headers)
    body = _check_body(payload)

    masked = _check_flag(payload, "mask_host")
    insecure = _check_flag(payload, "insecure")

    label = payload.get("label") or ""
    if not isinstance(label, str) or len(label) > MAX_LABEL or CONTROL_RE.search(label):
        raise _bad(f"label must be a string of at most {MAX_LABEL} characters, no control "
                   "characters")

    thresholds = check_thresholds(payload)
    abort_rate = share_value(payload.get("abort_on_error_rate"), "abort_on_error_rate", "0.5")

    return StartParams(url=url, host=host, users=users, duration_s=duration,
                       ramp_up_s=ramp_up, rate=rate, pipeline=pipeline, method=method,
                       headers=headers, body=body, mask_host=masked, insecure=insecure,
                       label=label.strip(), thresholds=thresholds,
                       abort_on_error_rate=abort_rate)
