"""RateLimiter: POST /api/start per client address, a token bucket (`serve --rate-limit`)."""
from __future__ import annotations

import math
import re
import threading
import time


class RateLimiter:
    """A token bucket per client address: `burst` starts at once, refilled at `per_s`."""

    MAX_CLIENTS = 10_000                # past this many buckets, full ones are forgotten

    def __init__(self, burst: int, per_s: float):
        self.burst = burst
        self.per_s = per_s
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, text: str) -> RateLimiter | None:
        """'10/min', '30/h', '5/s', '0' (off)."""
        match = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(s|sec|m|min|h|hour))?\s*", str(text))
        if not match:
            raise ValueError(f"invalid rate limit {text!r}: use N/min, N/h or 0 (off)")
        count = int(match.group(1))
        if count == 0:
            return None
        period = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}[match.group(2) or "min"]
        return cls(count, count / period)

    def take(self, key: str) -> tuple[bool, int]:
        """(allowed, seconds to wait before the next token)."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.per_s)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                allowed, wait = True, 0
            else:
                self._buckets[key] = (tokens, now)
                allowed, wait = False, max(1, math.ceil((1 - tokens) / self.per_s))
            if len(self._buckets) > self.MAX_CLIENTS:   # forget clients whose bucket is full again
                full = [k for k, (t, last_at) in self._buckets.items()
                        if t + (now - last_at) * self.per_s >= self.burst]
                for k in full:
                    del self._buckets[k]
        return allowed, wait
