"""End-to-end fixtures: the real app served by uvicorn on a loopback port, on the session's test
database, and a staff account to drive it with."""

from __future__ import annotations

import functools
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn

from cases.accounts import Role
from server.app import create_app
from server.passwords import hash_password
from server.settings import Settings, load_settings
from storage.accounts import OrgRepository, UserRepository

PASSWORD = "correct horse battery staple"
_STARTUP_SECONDS = 60.0


class StaffLogin(msgspec.Struct, frozen=True):
    email: str
    password: str


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture(scope="session")
def live_settings(database_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The live app's settings (a worker process opened with them shares its keys)."""
    data_dir: Path = tmp_path_factory.mktemp("fairwatch-e2e")
    return load_settings(
        {
            "FAIRWATCH_DATABASE_URL": database_dsn,
            "FAIRWATCH_DATA_DIR": str(data_dir),
            "FAIRWATCH_MAX_BODY_BYTES": str(4 * 1024 * 1024),
            "FAIRWATCH_LOG_JSON": "false",
            "FAIRWATCH_LOG_LEVEL": "WARNING",
            "FAIRWATCH_DB_POOL_MAX": "12",
            "FAIRWATCH_RATE_ANONYMOUS_PER_MINUTE": "0",
            "FAIRWATCH_RATE_STAFF_PER_MINUTE": "0",
            "FAIRWATCH_RATE_DEVICE_PER_MINUTE": "0",
        }
    )


@pytest.fixture(scope="session")
def live_server(live_settings: Settings) -> Iterator[str]:
    """The base URL of the app running in a background thread (its own event loop); the API
    only: a test runs the worker's jobs itself when it needs them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # a free port, held open so nothing else can take it
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(live_settings), lifespan="on", log_level="warning", ws="none", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + _STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.05)  # polling for start-up, with a deadline
    assert httpx.get(f"{base_url}/healthz", timeout=10).status_code == 200
    try:
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
async def org_admin(pool: asyncpg.Pool) -> StaffLogin:
    """A fresh organisation with an org_admin account (created directly, as make_actor does)."""
    slug = f"fleet-{uuid.uuid4().hex[:8]}"
    email = f"admin@{slug}.example.org"
    async with pool.acquire() as conn:
        org = await OrgRepository(conn).add(slug, f"Fleet test {slug}")
        await UserRepository(conn).add(
            org.id, email, "Fleet admin", Role.ORG_ADMIN, _password_hash()
        )
    return StaffLogin(email=email, password=PASSWORD)
