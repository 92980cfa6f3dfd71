"""The `auth` object of a POST /api/start body: the request headers it stands for.

    {"type": "bearer" | "jwt", "token": T}                  -> Authorization: Bearer T
    {"type": "basic", "username": U, "password": P}         -> Authorization: Basic base64(U:P)
    {"type": "header", "header_name": N, "header_value": V} -> N: V   (PipeOps' custom header;
        "name"/"value" are taken too, and "headers": {N: V, ...} adds more, as PipeOps did)

"jwt" and "header" are the original PipeOps app's names.  Every problem is an ApiError(400)."""
from __future__ import annotations

import base64
from typing import Any

from loadtester.web.errors import ApiError
from loadtester.web.requestheaders import (
    CONTROL_RE,
    MAX_HEADER_VALUE,
    check_headers,
    checked_header,
)

AUTH_FIELDS = {
    "bearer": {"type", "token"},
    "jwt": {"type", "token"},
    "basic": {"type", "username", "password"},
    "header": {"type", "header_name", "header_value", "name", "value", "headers"},
}
AUTH_SHAPES = ('auth must be {"type": "bearer" (or "jwt"), "token": ...}, '
               '{"type": "basic", "username": ..., "password": ...} or '
               '{"type": "header", "header_name": ..., "header_value": ...}')


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _bearer(auth: dict[str, Any]) -> tuple[str, str]:
    token = auth.get("token")
    if not isinstance(token, str) or not token.strip() or len(token) > MAX_HEADER_VALUE:
        raise _bad(f"auth.token must be a non-empty string of at most {MAX_HEADER_VALUE} "
                   "characters")
    return checked_header("Authorization", f"Bearer {token}", "auth.token")


def _basic(auth: dict[str, Any]) -> tuple[str, str]:
    user, password = auth.get("username"), auth.get("password", "")
    if not isinstance(user, str) or not isinstance(password, str) or ":" in user \
            or CONTROL_RE.search(user + password):
        raise _bad("auth.username and auth.password must be strings (no ':' in the "
                   "username, no control characters)")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return ("Authorization", f"Basic {token}")


def _custom_headers(auth: dict[str, Any]) -> dict[str, Any]:
    """{name: value} of a "header" auth: header_name/header_value (or name/value), and the
    optional `headers` object; checked as headers by the caller."""
    name = auth.get("header_name", auth.get("name"))
    value = auth.get("header_value", auth.get("value"))
    extra = auth.get("headers") or {}
    if not isinstance(extra, dict):
        raise _bad("auth.headers must be an object of header name -> value (strings)")
    wanted: dict[Any, Any] = {}
    if name is not None or value is not None:
        if not isinstance(name, str) or not name or not isinstance(value, str):
            raise _bad("auth.header_name and auth.header_value must be strings (a header "
                       "name and its value)")
        wanted[name] = value
    wanted.update(extra)
    if not wanted:
        raise _bad("a header auth needs header_name and header_value (or headers)")
    return wanted


def auth_headers(auth: object, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers `auth` adds; `headers` are those already given (an auth header may not
    repeat one of them)."""
    if not isinstance(auth, dict) or auth.get("type") not in AUTH_FIELDS:
        raise _bad(AUTH_SHAPES)
    kind = auth["type"]
    unknown = sorted(str(k) for k in auth if k not in AUTH_FIELDS[kind])
    if unknown:
        raise _bad(f"unknown field auth.{unknown[0]} for a {kind} auth (fields: "
                   f"{', '.join(sorted(AUTH_FIELDS[kind]))})")
    if kind in ("bearer", "jwt"):
        added = [_bearer(auth)]
    elif kind == "basic":
        added = [_basic(auth)]
    else:
        added = check_headers(_custom_headers(auth))
    given = {n.lower() for n, _ in headers}
    for name, _value in added:
        if name.lower() in given:
            if name.lower() == "authorization":
                raise _bad("give either auth or an Authorization header, not both")
            raise _bad(f"header {name!r} is given both in headers and in auth")
    return added
