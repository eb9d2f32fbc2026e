"""Logs carry request ids and never passwords or tokens."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from server.logs import JsonFormatter
from tests.api.conftest import PASSWORD, make_actor

pytestmark = pytest.mark.db


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_no_secrets_in_logs(client: AsyncTestClient[Litestar], pool: asyncpg.Pool) -> None:
    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        actor = await make_actor(client, pool)
        await client.post("/v1/auth/login", json={"email": actor.email, "password": "wrong-pw"})
        await client.get("/v1/users?page_token=secret-query", headers=actor.headers)
        await client.get("/v1/auth/me", headers=actor.headers)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = "\n".join(handler.lines)
    access = [line for line in handler.lines if '"logger": "fairwatch.access"' in line]
    assert len(access) >= 4
    assert all('"request_id": ' in line for line in access)
    assert PASSWORD not in text
    assert "wrong-pw" not in text
    assert actor.token not in text
    # The test client (httpx) logs its own request URLs; the server's lines are what matter.
    leaked = [ln for ln in handler.lines if "secret-query" in ln and '"logger": "httpx"' not in ln]
    assert leaked == []  # query strings may hold search terms about people
