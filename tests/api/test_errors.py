"""Every client mistake gets RFC 9457 problem details, never a 500."""

from __future__ import annotations

import gzip

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.api.conftest import make_actor

pytestmark = pytest.mark.db

Client = AsyncTestClient[Litestar]
PROBLEM = "application/problem+json"


def assert_problem(response: object, status: int, slug: str) -> dict[str, object]:
    r = response
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith(PROBLEM)  # type: ignore[attr-defined]
    body: dict[str, object] = r.json()  # type: ignore[attr-defined]
    assert body["type"] == f"urn:fairwatch:problem:{slug}"
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    return body


async def test_unknown_route(client: Client) -> None:
    body = assert_problem(await client.get("/v1/no-such-thing"), 404, "not-found")
    assert body["instance"] == "/v1/no-such-thing"


async def test_wrong_method(client: Client) -> None:
    assert_problem(await client.delete("/healthz"), 405, "method-not-allowed")


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b'{"email": "a@b.co", "password": }', b"\xff\xfe\x00", b"[1, 2"],
)
async def test_malformed_json(client: Client, raw: bytes) -> None:
    r = await client.post(
        "/v1/auth/login", content=raw, headers={"content-type": "application/json"}
    )
    assert_problem(r, 400, "malformed-body")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": 42, "password": "x"}, "email"),
        ({"email": "not-an-email", "password": "x"}, "email"),
        ({"password": "x"}, "email"),
        ({"email": "a@b.co", "password": ""}, "password"),
        ({"email": "a@b.co", "password": ["x"]}, "password"),
        ({"email": "a@b.co" * 100, "password": "x"}, "email"),
    ],
)
async def test_invalid_fields_are_named(
    client: Client, payload: dict[str, object], field: str
) -> None:
    body = assert_problem(await client.post("/v1/auth/login", json=payload), 422, "validation")
    errors = body["errors"]
    assert isinstance(errors, list)
    assert any(e["field"] == field for e in errors), errors


async def test_oversized_body_is_413(client: Client) -> None:
    big = b'{"email": "a@b.co", "password": "' + b"x" * (70 * 1024) + b'"}'
    r = await client.post(
        "/v1/auth/login", content=big, headers={"content-type": "application/json"}
    )
    assert_problem(r, 413, "body-too-large")


async def test_wrong_types_in_query_and_path(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool)
    r = await client.get("/v1/users", params={"limit": "lots"}, headers=admin.headers)
    assert r.status_code in (400, 422)
    assert r.headers["content-type"].startswith(PROBLEM)
    r = await client.get("/v1/users", params={"limit": 100000}, headers=admin.headers)
    assert r.status_code in (400, 422)
    r = await client.get("/v1/users", params={"page_token": "!!!"}, headers=admin.headers)
    assert_problem(r, 400, "invalid-page-token")


async def test_encoded_body_without_support_is_refused_cleanly(client: Client) -> None:
    r = await client.post(
        "/v1/auth/login",
        content=gzip.compress(b'{"email": "a@b.co", "password": "x"}'),
        headers={"content-type": "application/json"},
    )
    assert r.status_code in (400, 415)
    assert r.headers["content-type"].startswith(PROBLEM)


async def test_request_id_is_echoed_or_generated(client: Client) -> None:
    given = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    hostile = await client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"
    assert len(hostile.headers["x-request-id"]) == 32


async def test_health_and_readiness(client: Client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "blob_store": "ok"}


async def test_openapi_document_is_served(client: Client) -> None:
    doc = await client.get("/docs/openapi.json")
    assert doc.status_code == 200
    paths = doc.json()["paths"]
    assert "/v1/auth/login" in paths
    assert "/v1/users/{user_id}" in paths
    ui = await client.get("/docs/swagger")
    assert ui.status_code == 200
    assert "html" in ui.headers["content-type"]
