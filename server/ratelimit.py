"""Per-principal rate limits: a token bucket per device, per staff member and per client address.

An ASGI middleware placed after authentication (so ``scope["user"]`` names the caller): devices
and staff are limited by their own ids, unauthenticated requests (login, enrollment, password
reset) by client address. Refusals are 429 problem details with ``Retry-After``.

Buckets live in process memory: with N API replicas behind a load balancer a principal gets up to
N times the configured rate. That bounds abuse well enough (login guessing is also limited per
account in the database, see server/routes/auth.py); a shared limit would need a round trip per
request. The table of buckets is bounded (least recently used evicted).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

__all__ = ["RateLimitMiddleware", "RateLimits", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Sustained requests per minute and burst size, per kind of principal."""

    device_per_minute: float = 120.0
    device_burst: int = 60
    staff_per_minute: float = 600.0
    staff_burst: int = 120
    anonymous_per_minute: float = 30.0
    anonymous_burst: int = 10
    max_principals: int = 100_000


class TokenBucket:
    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate_per_second: float, capacity: int, now: float) -> None:
        self.rate = rate_per_second
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token; 0 when allowed, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def _principal(scope: Scope) -> tuple[str, str]:
    user = scope.get("user")
    device = getattr(user, "device", None)
    if device is not None:
        return "device", f"device:{device.id}"
    user_id = getattr(user, "user_id", None)
    if user_id is not None:
        return "staff", f"staff:{user_id}"
    client = scope.get("client")
    return "anonymous", f"ip:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    """Wraps the app; add with ``DefineMiddleware(RateLimitMiddleware, limits=RateLimits(...))``."""

    def __init__(
        self,
        app: ASGIApp,
        limits: RateLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.limits = limits or RateLimits()
        self._clock = clock
        self._buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()

    def _bucket(self, kind: str, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            limits = self.limits
            per_minute, burst = {
                "device": (limits.device_per_minute, limits.device_burst),
                "staff": (limits.staff_per_minute, limits.staff_burst),
                "anonymous": (limits.anonymous_per_minute, limits.anonymous_burst),
            }[kind]
            bucket = TokenBucket(per_minute / 60.0, burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > limits.max_principals:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        kind, key = _principal(scope)
        if getattr(self.limits, f"{kind}_per_minute") <= 0:  # this limit is turned off
            await self.app(scope, receive, send)
            return
        now = self._clock()
        wait = self._bucket(kind, key, now).take(now)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        await _refuse(scope, send, max(1, math.ceil(wait)))


async def _refuse(scope: Scope, send: Send, retry_after: int) -> None:
    body: dict[str, Any] = {
        "type": "urn:fairwatch:problem:rate-limited",
        "title": "Too many requests",
        "status": 429,
        "detail": f"slow down: retry in {retry_after} seconds",
        "instance": scope.get("path", ""),
    }
    payload = msgspec.json.encode(body)
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 429,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(payload)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": payload, "more_body": False}
    await send(end)
