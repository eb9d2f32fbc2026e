"""Seeded network chaos for the fleet simulator: requests lost before they reach the server,
answers lost after the server committed, old push batches replayed, and batches reshuffled.

It wraps a real httpx transport, so everything the server sees really went over the wire.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Final

import httpx
import msgspec

from sync.client.device import BatchPlanner
from sync.client.outbox import PendingMutation
from sync.codec import WireFormat, decode, format_for_content_type
from sync.messages import MutationResult, PushResponse

__all__ = ["ChaosStats", "ChaosTransport", "chaos_planner"]

_PUSH: Final = "/v1/sync/push"
_KEPT_BATCHES: Final = 16


class ChaosStats(msgspec.Struct, kw_only=True):
    dropped_before: int = 0
    dropped_after: int = 0
    replayed_batches: int = 0
    replay_failures: int = 0
    # Answers to replayed batches, to compare with what the device was told the first time.
    replayed_results: list[MutationResult] = msgspec.field(default_factory=list)


class ChaosTransport(httpx.AsyncBaseTransport):
    """Loses and replays sync requests with the given probabilities (enrollment is spared: its
    one-time code cannot be retried, which is the staff's problem, not the protocol's)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        rng: random.Random,
        stats: ChaosStats,
        *,
        drop_before: float = 0.06,
        drop_after: float = 0.06,
        replay: float = 0.15,
    ) -> None:
        self.inner = inner
        self.rng = rng
        self.stats = stats
        self.drop_before = drop_before
        self.drop_after = drop_after
        self.replay = replay
        self.enabled = True
        self._old_pushes: deque[tuple[httpx.Headers, bytes]] = deque(maxlen=_KEPT_BATCHES)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if not self.enabled or not path.startswith("/v1/sync/") or path.endswith("/enroll"):
            return await self.inner.handle_async_request(request)
        roll = self.rng.random()
        if roll < self.drop_before:
            self.stats.dropped_before += 1
            raise httpx.ConnectError("chaos: connection lost before sending", request=request)
        if path == _PUSH and self._old_pushes and self.rng.random() < self.replay:
            await self._replay(request)
        response = await self.inner.handle_async_request(request)
        if roll < self.drop_before + self.drop_after:
            # The server has done its work (and committed); the phone never hears the answer.
            await response.aread()
            await response.aclose()
            self.stats.dropped_after += 1
            raise httpx.ReadError("chaos: connection lost before the answer", request=request)
        if path == _PUSH:
            self._old_pushes.append((request.headers, request.content))
        return response

    async def _replay(self, current: httpx.Request) -> None:
        """Send an old push batch again, as a flaky proxy or a retry storm would."""
        headers, body = self.rng.choice(list(self._old_pushes))
        old = httpx.Request("POST", current.url, headers=headers, content=body)
        self.stats.replayed_batches += 1
        try:
            response = await self.inner.handle_async_request(old)
            await response.aread()
        except httpx.TransportError:
            self.stats.replay_failures += 1
            return
        if response.status_code != 200:
            self.stats.replay_failures += 1
            return
        fmt = format_for_content_type(response.headers.get("content-type")) or WireFormat.JSON
        answer = decode(PushResponse, response.content, fmt)
        self.stats.replayed_results.extend(answer.results)


def chaos_planner(rng: random.Random) -> BatchPlanner:
    """Batches of random size, sometimes missing one mutation, always shuffled: the server must
    put them back in seq order and hold what comes early."""

    def plan(pending: list[PendingMutation], limit: int) -> list[PendingMutation]:
        batch = pending[: rng.randint(1, min(limit, len(pending)))]
        if len(batch) > 2 and rng.random() < 0.25:
            skip = rng.randrange(len(batch))
            batch = [m for i, m in enumerate(batch) if i != skip]
        rng.shuffle(batch)
        return batch

    return plan
