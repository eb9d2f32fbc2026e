"""Exactly one scheduler leads; when the leader's session dies, a waiting one takes over."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from server.scheduler import SCHEDULER_LOCK_KEY, hold_leadership
from storage.db import connect

pytestmark = pytest.mark.db


async def test_second_scheduler_waits_then_takes_over(database_dsn: str) -> None:
    leaders: list[str] = []
    became = {"a": asyncio.Event(), "b": asyncio.Event()}
    b_refused = asyncio.Event()
    b_refusals = 0

    def make_lead(name: str) -> Callable[[], Awaitable[Callable[[], None]]]:
        async def lead() -> Callable[[], None]:
            leaders.append(name)
            became[name].set()
            return lambda: None

        return lead

    def b_attempt(got: bool) -> None:
        nonlocal b_refusals
        if not got:
            b_refusals += 1
            if b_refusals >= 3:
                b_refused.set()

    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(
        hold_leadership(database_dsn, stop_a, make_lead("a"), retry_seconds=0.05)
    )
    await asyncio.wait_for(became["a"].wait(), timeout=10)
    task_b = asyncio.create_task(
        hold_leadership(
            database_dsn, stop_b, make_lead("b"), retry_seconds=0.05, on_attempt=b_attempt
        )
    )
    probe = await connect(database_dsn)
    try:
        await asyncio.wait_for(b_refused.wait(), timeout=10)  # b tried three times and waited
        holders = await probe.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objid = ($1::bigint & x'ffffffff'::bigint)",
            SCHEDULER_LOCK_KEY,
        )
        assert holders == 1
        assert leaders == ["a"]
        stop_a.set()  # the leader goes away: its connection closes and the lock is released
        await asyncio.wait_for(task_a, timeout=10)
        await asyncio.wait_for(became["b"].wait(), timeout=10)
        assert leaders == ["a", "b"]
    finally:
        stop_b.set()
        await asyncio.wait_for(task_b, timeout=10)
        await probe.close()
