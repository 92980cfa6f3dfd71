"""The headers a test's requests carry (the `headers` object of POST /api/start, and the
custom headers of a "header" auth), checked by the CLI's grammar (headers.check_header: names
that are HTTP tokens, Latin-1 values without CR, LF or other control characters) and this
API's limits: how many, how long, nothing loadtester sets itself."""
from __future__ import annotations

import re

from loadtester.headers import HeaderError, check_header
from loadtester.web.errors import ApiError

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")         # in URLs, labels, thresholds: tab too

MAX_HEADERS = 64
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 8192
FORBIDDEN_HEADERS = {"content-length", "transfer-encoding"}


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def checked_header(name: str, value: str, what: str) -> tuple[str, str]:
    """(name, value) by headers.check_header, the value stripped; a 400 naming `what` (never
    repeating the value, which may be a secret) when it may not go on the wire."""
    try:
        name, value = check_header(name, value)
    except HeaderError as exc:
        raise _bad(f"{what}: {exc.reason}") from None
    return name, value.strip()


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
        if len(name) > MAX_HEADER_NAME:
            raise _bad(f"a header name is at most {MAX_HEADER_NAME} characters")
        if len(value) > MAX_HEADER_VALUE:
            raise _bad(f"header {name!r} is longer than {MAX_HEADER_VALUE} characters")
        headers.append(checked_header(name, value, f"header {name!r}"))
        if name.lower() in FORBIDDEN_HEADERS:
            raise _bad(f"header {name!r} is set by loadtester itself")
    return headers
