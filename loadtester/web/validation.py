"""The body of POST /api/start, checked: StartParams, validate_start() and the limits it
enforces.  Every problem is an ApiError(400) with one clear line."""
from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from typing import Any

from loadtester.spec import SpecError, parse_rate, parse_url
from loadtester.units import UnitError, parse_duration_s
from loadtester.web.display import plain_number
from loadtester.web.errors import ApiError

HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

MAX_USERS = 1000
MAX_DURATION_S = 3600
MAX_RATE = 100_000
MAX_BODY_BYTES = 1 << 20            # the test's request body
MAX_JSON_BYTES = 2 << 20            # the POST /api/start body itself
MAX_HEADERS = 64
MAX_HEADER_VALUE = 8192
MAX_LABEL = 200
MAX_URL = 2048
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
FORBIDDEN_HEADERS = {"content-length", "transfer-encoding"}
DEFAULT_USERS = 10
DEFAULT_DURATION_S = 30.0


@dataclass
class StartParams:
    url: str
    host: str
    users: int
    duration_s: float
    ramp_up_s: float | None = None
    rate: float | None = None
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str | None = None
    mask_host: bool = False
    label: str = ""


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _seconds(value: object, what: str) -> float | None:
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


def _check_users(payload: dict[str, Any]) -> int:
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
    duration = _seconds(payload.get("duration"), "duration")
    if duration is None:
        duration = DEFAULT_DURATION_S
    if not 1 <= duration <= MAX_DURATION_S:
        raise _bad(f"duration must be from 1 to {MAX_DURATION_S} seconds "
                   f"(got {plain_number(duration)})")

    ramp_up = _seconds(payload.get("ramp_up"), "ramp_up")
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


def _check_method(payload: dict[str, Any]) -> str:
    method = payload.get("method") or "GET"
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise _bad(f"method must be one of {', '.join(METHODS)}")
    return method.upper()


def check_headers(headers_in: object) -> list[tuple[str, str]]:
    """The `headers` object as (name, value) pairs: names and values a request may carry."""
    if not isinstance(headers_in, dict):
        raise _bad("headers must be an object of header name -> value (strings)")
    if len(headers_in) > MAX_HEADERS:
        raise _bad(f"at most {MAX_HEADERS} headers")
    headers: list[tuple[str, str]] = []
    for name, value in headers_in.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise _bad("headers must be an object of header name -> value (strings)")
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise _bad(f"header {name!r} must not contain CR or LF")
        if not HEADER_NAME_RE.match(name):
            raise _bad(f"invalid header name {name!r}")
        if CONTROL_RE.search(value.replace("\t", " ")):
            raise _bad(f"header {name!r} has control characters in its value")
        if len(value) > MAX_HEADER_VALUE:
            raise _bad(f"header {name!r} is longer than {MAX_HEADER_VALUE} characters")
        if name.lower() in FORBIDDEN_HEADERS:
            raise _bad(f"header {name!r} is set by loadtester itself")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise _bad(f"header {name!r} must be Latin-1 text") from None
        headers.append((name, value.strip()))
    return headers


def auth_header(auth: object, headers: list[tuple[str, str]]) -> tuple[str, str]:
    """The Authorization header the `auth` object asks for (headers: those already given)."""
    if not isinstance(auth, dict) or auth.get("type") not in ("bearer", "basic"):
        raise _bad('auth must be {"type": "bearer", "token": ...} or '
                   '{"type": "basic", "username": ..., "password": ...}')
    if any(n.lower() == "authorization" for n, _ in headers):
        raise _bad("give either auth or an Authorization header, not both")
    if auth["type"] == "bearer":
        token = auth.get("token")
        if not isinstance(token, str) or not token or CONTROL_RE.search(token) \
                or len(token) > MAX_HEADER_VALUE:
            raise _bad("auth.token must be a non-empty string without control characters")
        try:
            token.encode("latin-1")
        except UnicodeEncodeError:
            raise _bad("auth.token must be Latin-1 text") from None
        return ("Authorization", f"Bearer {token}")
    user, password = auth.get("username"), auth.get("password", "")
    if not isinstance(user, str) or not isinstance(password, str) or ":" in user \
            or CONTROL_RE.search(user + password):
        raise _bad("auth.username and auth.password must be strings (no ':' in the "
                   "username, no control characters)")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return ("Authorization", f"Basic {token}")


def _check_body(payload: dict[str, Any]) -> str | None:
    body = payload.get("body")
    if body is None:
        return None
    if not isinstance(body, str):
        raise _bad("body must be a string")
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        raise _bad(f"body is larger than {MAX_BODY_BYTES} bytes (1 MiB)")
    return body or None


def validate_start(payload: object) -> StartParams:
    """The body of POST /api/start, checked; every problem is a 400 with one clear line."""
    if not isinstance(payload, dict):
        raise _bad("the request body must be a JSON object")
    url, host = _check_url(payload)
    users = _check_users(payload)
    duration, ramp_up = _check_timing(payload)
    rate = _check_rate(payload)
    method = _check_method(payload)
    headers = check_headers(payload.get("headers") or {})
    auth = payload.get("auth")
    if auth:
        headers.append(auth_header(auth, headers))
    body = _check_body(payload)

    masked = payload.get("mask_host", False)
    if not isinstance(masked, bool):
        raise _bad("mask_host must be true or false")

    label = payload.get("label") or ""
    if not isinstance(label, str) or len(label) > MAX_LABEL or CONTROL_RE.search(label):
        raise _bad(f"label must be a string of at most {MAX_LABEL} characters, no control "
                   "characters")

    return StartParams(url=url, host=host, users=users, duration_s=duration,
                       ramp_up_s=ramp_up, rate=rate, method=method, headers=headers, body=body,
                       mask_host=masked, label=label.strip())
