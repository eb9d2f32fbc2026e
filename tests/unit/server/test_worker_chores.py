"""Chores: what every worker process does for itself on a timer, between jobs."""

from __future__ import annotations

from typing import Any, cast

import asyncpg
import pytest

from server.matching_jobs import CHORES, refresh_held_indexes
from server.worker import Chore, WorkerContext, all_chores, do_chores_due

NO_POOL = cast(asyncpg.Pool, None)


async def test_a_chore_runs_when_its_interval_has_passed_and_not_before() -> None:
    runs: list[str] = []

    async def tick(_: asyncpg.Pool, __: WorkerContext) -> None:
        runs.append("tick")

    chores = [Chore(every=60.0, run=tick)]
    last_done = [1000.0]
    context = WorkerContext()
    assert await do_chores_due(NO_POOL, chores, last_done, 1059.9, context) == 0
    assert await do_chores_due(NO_POOL, chores, last_done, 1060.0, context) == 1
    assert last_done == [1060.0]
    assert await do_chores_due(NO_POOL, chores, last_done, 1100.0, context) == 0
    assert runs == ["tick"]


async def test_a_failing_chore_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[str] = []

    async def broken(_: asyncpg.Pool, __: WorkerContext) -> None:
        raise RuntimeError("index gone")

    async def fine(_: asyncpg.Pool, __: WorkerContext) -> None:
        runs.append("fine")

    chores = [Chore(every=1.0, run=broken), Chore(every=1.0, run=fine)]
    last_done = [0.0, 0.0]
    assert await do_chores_due(NO_POOL, chores, last_done, 5.0, WorkerContext()) == 2
    assert runs == ["fine"]
    assert last_done == [5.0, 5.0]  # tried again at its next turn, not in a tight loop
    assert "worker chore broken failed" in caplog.text


def test_every_worker_refreshes_its_person_indexes_every_minute() -> None:
    found: list[Any] = [c for c in all_chores() if c.run is refresh_held_indexes]
    assert found == [c for c in CHORES if c.run is refresh_held_indexes]
    assert [c.every for c in found] == [60.0]
