"""In-process sliding-window rate limits (per client address), e.g. for login and token refresh."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from pulse.web.context import context_of
from pulse.web.errors import RateLimited


class SlidingWindowLimiter:
    """At most `limit` hits per key in any `window_s` seconds. Per process: N web processes allow N times the limit."""

    def __init__(self, limit: int, window_s: float, monotonic: Callable[[], float], *, max_keys: int = 100_000):
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._monotonic = monotonic
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> int | None:
        """Record a hit; None when allowed, else whole seconds until the next hit would be."""
        now = self._monotonic()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self._max_keys:
                self._prune(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(1, math.ceil(hits[0] + self.window_s - now))
        hits.append(now)
        return None

    def _prune(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window_s]:
            del self._hits[key]
        while len(self._hits) >= self._max_keys:  # still full of live keys: drop the oldest inserted
            del self._hits[next(iter(self._hits))]


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer address (uvicorn rewrites it from X-Forwarded-For only for trusted proxies)."""
    return connection.client.host if connection.client else "unknown"


def rate_limit(bucket: str) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """A guard charging one hit per request to the caller's address in limiter `bucket`."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        limiter = context_of(connection).limiters[bucket]
        retry_after = limiter.hit(client_address(connection))
        if retry_after is not None:
            raise RateLimited(retry_after)

    guard.__name__ = f"rate_limit({bucket})"
    return guard
