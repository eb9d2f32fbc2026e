"""The processes the sync benchmark drives: PostgreSQL, the Fairwatch app and pouchdb-server.

Each is started here and stopped by the ``async with`` that started it, even on error. The app runs
as ``python -m server serve --role api`` in its own process, so its memory can be measured alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx

from storage.db import connect, with_database
from storage.embedded import start_embedded_postgres
from storage.migrate import apply_migrations

__all__ = [
    "POUCHDB_BIN",
    "Process",
    "bench_database",
    "fairwatch_app",
    "free_port",
    "pouchdb_server",
]

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(__file__).resolve().parent / ".work"
POUCHDB_BIN = WORK / "pouchdb" / "node_modules" / ".bin" / "pouchdb-server"
_STARTUP_SECONDS = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """A server child process on a loopback port, in its own process group."""

    def __init__(self, popen: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
        self.popen = popen
        self.base_url = base_url
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        # SIGINT first: uvicorn shuts down cleanly (and cProfile writes its file).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGINT)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


async def _wait_until_up(proc: Process, path: str) -> None:
    deadline = time.monotonic() + _STARTUP_SECONDS
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            if proc.popen.poll() is not None:
                tail = proc.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{proc.base_url} exited at start-up:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(proc.base_url + path)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.base_url} did not start in {_STARTUP_SECONDS:.0f} s")
            await asyncio.sleep(0.1)  # polling for start-up, with a deadline


def _spawn(
    argv: list[str], env: Mapping[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextlib.asynccontextmanager
async def bench_database(tmp: Path) -> AsyncIterator[str]:
    """A migrated scratch database: on ``FAIRWATCH_BENCH_DATABASE_URL`` or an embedded server."""
    external = os.environ.get("FAIRWATCH_BENCH_DATABASE_URL")
    embedded = None
    if external:
        server_dsn = external
    else:
        embedded = await asyncio.to_thread(
            start_embedded_postgres, tmp / "pgdata", delete_on_stop=True
        )
        server_dsn = embedded.dsn("postgres")
    name = f"fairwatch_bench_{secrets.token_hex(4)}"
    try:
        conn = await connect(server_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        dsn = with_database(server_dsn, name)
        conn = await connect(dsn)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
        try:
            yield dsn
        finally:
            conn = await connect(server_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


@contextlib.asynccontextmanager
async def fairwatch_app(dsn: str, tmp: Path, profile: Path | None = None) -> AsyncIterator[Process]:
    """``fairwatch serve --role api`` on a free loopback port (optionally under cProfile)."""
    port = free_port()
    data_dir = tmp / "fairwatch-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "FAIRWATCH_DATABASE_URL": dsn,
        "FAIRWATCH_DATA_DIR": str(data_dir),
        "FAIRWATCH_LOG_LEVEL": "WARNING",
        "FAIRWATCH_LOG_JSON": "false",
        "FAIRWATCH_CREATE_DEMO": "false",
        "FAIRWATCH_DB_POOL_MAX": "12",
        "FAIRWATCH_RATE_ANONYMOUS_PER_MINUTE": "0",
        "FAIRWATCH_RATE_STAFF_PER_MINUTE": "0",
        "FAIRWATCH_RATE_DEVICE_PER_MINUTE": "0",
    }
    prefix = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    argv = [*prefix, "-m", "server", "serve", "--role", "api", "--no-migrate"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    proc = Process(
        _spawn(argv, env, ROOT, tmp / "app.log"), f"http://127.0.0.1:{port}", tmp / "app.log"
    )
    try:
        await _wait_until_up(proc, "/healthz")
        yield proc
    finally:
        await asyncio.to_thread(proc.stop)


@contextlib.asynccontextmanager
async def pouchdb_server(tmp: Path) -> AsyncIterator[Process]:
    """pouchdb-server (leveldb adapter, its default) with its databases in a temp directory."""
    node = shutil.which("node")
    if node is None or not POUCHDB_BIN.exists():
        raise FileNotFoundError(
            f"pouchdb-server is not installed at {POUCHDB_BIN} "
            "(npm install --prefix bench/.work/pouchdb pouchdb-server)"
        )
    port = free_port()
    data = tmp / "pouchdb"
    data.mkdir(parents=True, exist_ok=True)
    argv = [node, str(POUCHDB_BIN.resolve()), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--dir", str(data), "--config", str(data / "config.json"), "--no-stdout-logs"]
    log = tmp / "pouchdb.log"
    proc = Process(_spawn(argv, os.environ, data, log), f"http://127.0.0.1:{port}", log)
    try:
        await _wait_until_up(proc, "/")
        yield proc
    finally:
        await asyncio.to_thread(proc.stop)
