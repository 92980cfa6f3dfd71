"""ApiError: what an endpoint (or a check it calls) raises to answer {"error": message}."""
from __future__ import annotations


class ApiError(Exception):
    """Answered as {"error": message} with `status` and `headers` (the app's handler)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
