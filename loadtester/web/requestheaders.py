"""The headers a test's requests carry (the `headers` object of POST /api/start, and the
custom headers of a "header" auth), checked: names that are HTTP tokens, Latin-1 values
without CR, LF or other control characters, nothing loadtester sets itself."""
from __future__ import annotations

import re

from loadtester.web.errors import ApiError

HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

MAX_HEADERS = 64
MAX_HEADER_VALUE = 8192
FORBIDDEN_HEADERS = {"content-length", "transfer-encoding"}


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


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
