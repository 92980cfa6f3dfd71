"""The API's response bodies: JSON (non-finite floats as null), {"error": ...} and
Server-Sent Events."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response


def clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become null, bytes are dropped."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items() if not isinstance(v, (bytes, memoryview))}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def json_response(data: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(clean(data), separators=(",", ":"), ensure_ascii=False, default=str)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """{"error": message}."""
    return json_response({"error": message}, status, headers)


def sse_event(event: str, data: Any, event_id: int | None = None) -> str:
    """One Server-Sent Event: `id:` (when given), `event:` and one line of JSON `data:`."""
    text = json.dumps(clean(data), separators=(",", ":"), default=str)
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {text}\n\n"
