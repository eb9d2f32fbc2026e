"""Two real scheduler processes (``python -m server serve --role scheduler``) on one database:
exactly one holds the advisory lock and leads, the other waits; when the leader is killed the
waiting one takes over. Leadership is read from pg_locks (each scheduler names its session
``fairwatch-scheduler pid=<pid>``), never inferred from elapsed time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from server.scheduler import SCHEDULER_LOCK_KEY
from storage.db import connect

pytestmark = [pytest.mark.db, pytest.mark.e2e]

DEADLINE_SECONDS = 60.0
REPO = Path(__file__).resolve().parents[2]

LEADER_SQL = """
SELECT a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.objid = ($1::bigint & x'ffffffff'::bigint) AND l.classid = ($1::bigint >> 32)
"""


class Scheduler:
    def __init__(self, dsn: str, data_dir: Path, name: str) -> None:
        self.log = data_dir / f"{name}.log"
        env = {
            **os.environ,
            "FAIRWATCH_DATABASE_URL": dsn,
            "FAIRWATCH_DATA_DIR": str(data_dir),
            "FAIRWATCH_CREATE_DEMO": "false",
            "FAIRWATCH_LOG_JSON": "false",
            "FAIRWATCH_LOG_LEVEL": "INFO",
        }
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--role", "scheduler", "--no-migrate"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def session_name(self) -> str:
        return f"fairwatch-scheduler pid={self.process.pid}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def start(database_dsn: str, tmp_path: Path) -> Iterator[Callable[[str], Scheduler]]:
    started: list[Scheduler] = []

    def launch(name: str) -> Scheduler:
        started.append(Scheduler(database_dsn, tmp_path, name))
        return started[-1]

    yield launch
    for scheduler in started:
        scheduler.stop()


async def _leaders(dsn: str) -> list[str]:
    conn = await connect(dsn)
    try:
        rows = await conn.fetch(LEADER_SQL, SCHEDULER_LOCK_KEY)
    finally:
        await conn.close()
    return [r["application_name"] for r in rows]


async def _until(
    check: Callable[[], Awaitable[bool]], what: str, processes: list[Scheduler]
) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            logs = "\n".join(p.output()[-2000:] for p in processes)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        await asyncio.sleep(0.1)  # polling with a deadline


async def test_one_scheduler_leads_and_the_other_takes_over(
    database_dsn: str, start: Callable[[str], Scheduler]
) -> None:
    first = start("first")

    async def first_leads() -> bool:
        return await _leaders(database_dsn) == [first.session_name]

    await _until(first_leads, "the first scheduler to lead", [first])

    second = start("second")

    async def second_waits() -> bool:
        assert second.process.poll() is None, second.output()
        return "another process is the active scheduler" in second.output()

    await _until(second_waits, "the second scheduler to try and wait", [first, second])
    assert await _leaders(database_dsn) == [first.session_name]  # still exactly one leader

    first.process.kill()  # no clean shutdown: the database notices the dead session
    first.process.wait(timeout=10)

    async def second_leads() -> bool:
        return await _leaders(database_dsn) == [second.session_name]

    await _until(second_leads, "the second scheduler to take over", [first, second])
    assert "this process is the active scheduler" in second.output()
