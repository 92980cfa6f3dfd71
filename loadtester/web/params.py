"""What a request carries, checked: the client address, a run uuid in the path, whole-number
query parameters and a body read up to a limit (413 past it)."""
from __future__ import annotations

import re

from starlette.requests import Request

from loadtester.web.errors import ApiError

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check_uuid(run_uuid: str) -> str:
    """The uuid in lower case; 404 when it is not one (no run can have that name)."""
    run_uuid = run_uuid.lower()
    if not UUID_RE.match(run_uuid):
        raise ApiError(404, f"no run {run_uuid!r}")
    return run_uuid


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """?name=N, from lo to hi (default when absent or empty)."""
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be from {lo} to {hi}")
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; 413 as soon as it (or its Content-Length) is over `limit` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
