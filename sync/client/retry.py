"""Retrying a sync call with capped exponential backoff and full jitter.

Only failures the server or the network may get over are retried (``SyncError.retryable``); the
request is resent unchanged, which the protocol makes safe for every sync endpoint.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from sync.client.transport import ProblemResponse, SyncError

__all__ = ["RetryPolicy", "Sleep", "call_with_retries"]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """``attempts`` counts the first try. Delays grow ``base * 2**n`` up to ``max_delay``."""

    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        # Full jitter: a fleet that lost its network together must not come back in lockstep.
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        return rng.uniform(0.0, ceiling)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    rng: random.Random,
    sleep: Sleep = asyncio.sleep,
    on_retry: Callable[[SyncError], None] | None = None,
) -> T:
    """``call()`` until it succeeds, a non-retryable error occurs, or attempts run out."""
    attempt = 0
    while True:
        try:
            return await call()
        except SyncError as exc:
            attempt += 1
            if not exc.retryable or attempt >= policy.attempts:
                raise
            if on_retry is not None:
                on_retry(exc)
            delay = policy.delay(attempt - 1, rng)
            if isinstance(exc, ProblemResponse) and exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, policy.max_delay))
            await sleep(delay)
