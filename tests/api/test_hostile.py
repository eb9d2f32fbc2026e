"""A hostile client: floods (rate limits), injection strings, absurd numbers, bombs, bad bytes."""

from __future__ import annotations

import gzip
import uuid
from types import SimpleNamespace
from typing import Any

import asyncpg
import msgspec
import pytest
import zstandard
from litestar import Litestar, get
from litestar.middleware import DefineMiddleware
from litestar.testing import AsyncTestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from cases.accounts import Role
from server.ratelimit import RateLimitMiddleware, RateLimits, TokenBucket
from tests.api.conftest import make_actor
from tests.api.sync_support import batch, create, new_phone, report

Client = AsyncTestClient[Litestar]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _as_user(app: ASGIApp) -> ASGIApp:
    """Stands in for authentication: ``x-user`` names a staff member, ``x-device`` a device."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", []))
        if b"x-user" in headers:
            scope["user"] = SimpleNamespace(user_id=headers[b"x-user"].decode())
        elif b"x-device" in headers:
            scope["user"] = SimpleNamespace(device=SimpleNamespace(id=headers[b"x-device"]))
        await app(scope, receive, send)

    return middleware


@get("/ping", sync_to_thread=False)
def ping() -> dict[str, str]:
    return {"ok": "yes"}


def _limited_app(clock: FakeClock) -> Litestar:
    limits = RateLimits(staff_per_minute=60, staff_burst=3, anonymous_per_minute=6,
                        anonymous_burst=2, device_per_minute=120, device_burst=1)  # fmt: skip
    return Litestar(
        route_handlers=[ping],
        middleware=[_as_user, DefineMiddleware(RateLimitMiddleware, limits=limits, clock=clock)],
    )


async def test_each_principal_has_its_own_bucket_and_429_says_when() -> None:
    clock = FakeClock()
    async with AsyncTestClient(app=_limited_app(clock)) as client:
        alice = {"x-user": "alice"}
        assert [(await client.get("/ping", headers=alice)).status_code for _ in range(3)] == [
            200
        ] * 3
        refused = await client.get("/ping", headers=alice)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"  # 60/min: one token a second
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == "urn:fairwatch:problem:rate-limited"
        # Someone else is not punished for Alice's flood; a device has its own bucket too.
        assert (await client.get("/ping", headers={"x-user": "bob"})).status_code == 200
        assert (await client.get("/ping", headers={"x-device": "d1"})).status_code == 200
        assert (await client.get("/ping", headers={"x-device": "d1"})).status_code == 429
        clock.now += 1.0
        assert (await client.get("/ping", headers=alice)).status_code == 200
        # Anonymous callers share a bucket per address: 6/min, burst 2, then 10 s to wait.
        assert [(await client.get("/ping")).status_code for _ in range(3)] == [200, 200, 429]
        assert (await client.get("/ping")).headers["retry-after"] == "10"


def test_bucket_refills_at_its_rate_up_to_capacity() -> None:
    bucket = TokenBucket(rate_per_second=2.0, capacity=2, now=0.0)
    assert [bucket.take(0.0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(10.0) == 0.0  # refilled, but never beyond capacity
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) > 0


def test_bucket_table_is_bounded() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not called")

    limiter = RateLimitMiddleware(app, RateLimits(max_principals=5), FakeClock())
    for n in range(20):
        limiter._bucket("staff", f"staff:{n}", 0.0)
    assert list(limiter._buckets) == [f"staff:{n}" for n in range(15, 20)]


# Hostile input through the real app ------------------------------------------------------------

INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE reports; --",
    '" OR ""="',
    "1; SELECT pg_sleep(10)",
    "\\x00\\u0000",
    "%' UNION SELECT password_hash FROM staff_users --",
]


@pytest.mark.db
@pytest.mark.parametrize("text", INJECTIONS)
async def test_injection_strings_are_just_data(
    client: Client, pool: asyncpg.Pool, text: str
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    login = await client.post("/v1/auth/login", json={"email": f"{text}@x.org", "password": text})
    assert login.status_code in (401, 422)
    listed = await client.get(
        "/v1/registry/entities", params={"page_token": text}, headers=admin.headers
    )
    assert listed.status_code == 400
    created = await client.post(
        "/v1/registry/entities",
        json={"kind": "employer", "legal_name": text},
        headers=admin.headers,
    )
    assert created.status_code in (201, 422)
    if created.status_code == 201:
        back = await client.get(
            f"/v1/registry/entities/{created.json()['id']}", headers=admin.headers
        )
        assert back.json()["legal_name"] == text
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM staff_users") >= 1  # nothing dropped


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.db
async def test_deeply_nested_json_is_a_client_error(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    nested = b'{"kind": "employer", "legal_name": ' + _deep(5000) + b"}"
    r = await client.post(
        "/v1/registry/entities", content=nested,
        headers={**admin.headers, "content-type": "application/json"},
    )  # fmt: skip
    assert r.status_code in (400, 422), r.text


@pytest.mark.db
async def test_oversized_json_is_413(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    big = b'{"kind": "employer", "legal_name": "' + b"a" * (200 * 1024) + b'"}'
    r = await client.post(
        "/v1/registry/entities", content=big,
        headers={**admin.headers, "content-type": "application/json"},
    )  # fmt: skip
    assert r.status_code == 413


@pytest.mark.db
async def test_invalid_utf8_in_a_json_string_is_a_client_error(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    bad_utf8 = b'{"kind": "employer", "legal_name": "\xff\xfe\xc3"}'
    r = await client.post(
        "/v1/registry/entities", content=bad_utf8,
        headers={**admin.headers, "content-type": "application/json"},
    )  # fmt: skip
    assert r.status_code == 400


@pytest.mark.db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lat", "NaN"), ("lat", "Infinity"), ("lon", "-Infinity"), ("lat", "1e309"),
        ("lat", "91"), ("lon", "-180.0001"),
    ],
)  # fmt: skip
async def test_non_finite_and_out_of_range_coordinates_are_rejected(
    client: Client, pool: asyncpg.Pool, field: str, value: str
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    body = report()
    marker = 12345.678
    body["location"] = {**body["location"], field: marker}
    raw = _json(batch(phone, [create(phone, body)])).replace(str(marker), value)
    r = await client.post(
        "/v1/sync/push", content=raw.encode(),
        headers={**phone.headers, "content-type": "application/json"},
    )  # fmt: skip
    assert r.status_code in (200, 400, 422), r.text
    if r.status_code == 200:
        assert r.json()["results"][0]["status"] == "rejected"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reports") == 0


@pytest.mark.db
@pytest.mark.parametrize("when", ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "10000-01-01"])
async def test_dates_at_the_edges_of_time(client: Client, pool: asyncpg.Pool, when: str) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    r = await client.post(
        "/v1/sync/push", json=batch(phone, [create(phone, report(occurred_at=when))]),
        headers=phone.headers,
    )  # fmt: skip
    assert r.status_code in (200, 422), r.text
    if r.status_code == 200 and r.json()["results"][0]["status"] == "applied":
        async with pool.acquire() as conn:
            flags = await conn.fetchval("SELECT time_flags FROM reports")
        assert "occurred_in_future" in flags  # accepted, but flagged as impossible
    cases = await client.get("/v1/cases", params={"created_from": when}, headers=staff.headers)
    assert cases.status_code < 500


@pytest.mark.db
@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_compression_bombs_on_every_sync_body(
    client: Client, pool: asyncpg.Pool, encoding: str
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    inflated = b'{"device_id": "' + b"0" * (40 * 1024 * 1024) + b'"}'
    bomb = gzip.compress(inflated, 9) if encoding == "gzip" else zstandard.compress(inflated, 19)
    assert len(bomb) < 64 * 1024
    for path in ("/v1/sync/pull", "/v1/sync/attachments", "/v1/sync/push"):
        r = await client.post(
            path, content=bomb,
            headers={**phone.headers, "content-type": "application/json",
                     "content-encoding": encoding},
        )  # fmt: skip
        assert r.status_code == 413, (path, r.text)
    enroll = await client.post(
        "/v1/sync/enroll", content=bomb,
        headers={"content-type": "application/json", "content-encoding": encoding},
    )  # fmt: skip
    assert enroll.status_code == 413


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


@pytest.mark.db
async def test_unknown_uuid_is_not_found_everywhere(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    for path in ("/v1/users/{}", "/v1/monitors/{}", "/v1/reports/{}", "/v1/cases/{}"):
        r = await client.get(path.format(uuid.uuid4()), headers=admin.headers)
        assert r.status_code == 404, path
