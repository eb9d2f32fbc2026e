"""API fixtures: the real app (``create_app``) on the session's database, driven over ASGI."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cases.accounts import Role
from server.app import create_app
from server.passwords import hash_password
from server.settings import Settings, load_settings
from storage.accounts import OrgRepository, UserRepository
from tests.conftest import truncate_all
from tests.s3server import S3Server

PASSWORD = "correct horse battery staple"


@functools.cache
def _password_hash() -> str:
    # argon2id is deliberately slow; hash the shared test password once per session.
    return hash_password(PASSWORD)


class Actor(msgspec.Struct):
    """A logged-in staff member, with headers ready for requests."""

    org_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    role: Role
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
def api_settings(database_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir: Path = tmp_path_factory.mktemp("fairwatch-data")
    return load_settings(
        {
            "FAIRWATCH_DATABASE_URL": database_dsn,
            "FAIRWATCH_DATA_DIR": str(data_dir),
            "FAIRWATCH_MAX_BODY_BYTES": str(64 * 1024),
            "FAIRWATCH_LOG_JSON": "false",
            "FAIRWATCH_DB_POOL_MAX": "8",
            # The suite logs in hundreds of times from one address; limits have their own tests.
            "FAIRWATCH_RATE_ANONYMOUS_PER_MINUTE": "0",
            "FAIRWATCH_RATE_STAFF_PER_MINUTE": "0",
            "FAIRWATCH_RATE_DEVICE_PER_MINUTE": "0",
        }
    )


@pytest.fixture(scope="session")
async def app_client(api_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(api_settings)
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture
async def s3_client(
    api_settings: Settings, s3_server: S3Server, pool: asyncpg.Pool
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An app whose attachments go to the real S3 server process (`tests/s3server.py`)."""
    env = {
        "FAIRWATCH_DATABASE_URL": api_settings.database_url or "",
        "FAIRWATCH_DATA_DIR": str(api_settings.data_dir),
        "FAIRWATCH_S3_ENDPOINT": s3_server.endpoint,
        "FAIRWATCH_S3_ACCESS_KEY": s3_server.access_key,
        "FAIRWATCH_S3_SECRET_KEY": s3_server.secret_key,
        "FAIRWATCH_S3_BUCKET": s3_server.bucket,
        "FAIRWATCH_S3_SECURE": "true" if s3_server.secure else "false",
        "FAIRWATCH_LOG_JSON": "false",
        "FAIRWATCH_RATE_STAFF_PER_MINUTE": "0",
        "FAIRWATCH_RATE_DEVICE_PER_MINUTE": "0",
        "FAIRWATCH_RATE_ANONYMOUS_PER_MINUTE": "0",
    }
    if s3_server.region:
        env["FAIRWATCH_S3_REGION"] = s3_server.region
    try:
        async with AsyncTestClient(app=create_app(load_settings(env))) as client:
            yield client
    finally:
        await truncate_all(pool)


@pytest.fixture
async def client(
    app_client: AsyncTestClient[Litestar], pool: asyncpg.Pool
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    try:
        yield app_client
    finally:
        await truncate_all(pool)


async def make_actor(
    client: AsyncTestClient[Litestar],
    pool: asyncpg.Pool,
    role: Role = Role.ORG_ADMIN,
    org_slug: str | None = None,
) -> Actor:
    """Create (or reuse) an organisation and a user in it, then log in through the API."""
    slug = org_slug or f"org-{uuid.uuid4().hex[:8]}"
    email = f"{role.value}-{uuid.uuid4().hex[:8]}@{slug}.example.org"
    async with pool.acquire() as conn:
        orgs = OrgRepository(conn)
        org = await orgs.get_by_slug(slug) or await orgs.add(slug, f"Org {slug}")
        user = await UserRepository(conn).add(org.id, email, "Test user", role, _password_hash())
    response = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return Actor(org.id, user.id, email, role, response.json()["token"])
