"""Login, sessions and the organisation boundary, through the real app."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cases.accounts import Role
from tests.api.conftest import PASSWORD, make_actor

pytestmark = pytest.mark.db

Client = AsyncTestClient[Litestar]


async def test_login_me_logout(client: Client, pool: asyncpg.Pool) -> None:
    actor = await make_actor(client, pool, Role.CASE_MANAGER)
    me = await client.get("/v1/auth/me", headers=actor.headers)
    assert me.status_code == 200
    assert me.json()["email"] == actor.email
    assert "password_hash" not in me.json()
    out = await client.post("/v1/auth/logout", headers=actor.headers)
    assert out.status_code == 204
    again = await client.get("/v1/auth/me", headers=actor.headers)
    assert again.status_code == 401
    assert again.headers["content-type"].startswith("application/problem+json")


async def test_token_is_stored_hashed(client: Client, pool: asyncpg.Pool) -> None:
    actor = await make_actor(client, pool)
    async with pool.acquire() as conn:
        stored = await conn.fetch("SELECT token_hash FROM staff_sessions")
    assert stored
    assert all(actor.token.encode() not in bytes(r["token_hash"]) for r in stored)


async def test_wrong_password_and_unknown_user_look_the_same(
    client: Client, pool: asyncpg.Pool
) -> None:
    actor = await make_actor(client, pool)
    wrong = await client.post("/v1/auth/login", json={"email": actor.email, "password": "nope"})
    unknown = await client.post(
        "/v1/auth/login", json={"email": "ghost@example.org", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()["type"]
        == unknown.json()["type"]
        == "urn:fairwatch:problem:invalid-credentials"
    )


async def test_repeated_failures_lock_the_account(client: Client, pool: asyncpg.Pool) -> None:
    actor = await make_actor(client, pool)
    for _ in range(5):
        r = await client.post("/v1/auth/login", json={"email": actor.email, "password": "bad"})
        assert r.status_code == 401
    locked = await client.post("/v1/auth/login", json={"email": actor.email, "password": PASSWORD})
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert locked.json()["type"] == "urn:fairwatch:problem:account-locked"


async def test_garbage_tokens_are_unauthenticated(client: Client) -> None:
    for header in ("", "Bearer", "Basic abc", "Bearer " + "x" * 40, "Bearer " + "y" * 5000):
        r = await client.get("/v1/auth/me", headers={"Authorization": header} if header else {})
        assert r.status_code == 401, header
        assert r.json()["type"] == "urn:fairwatch:problem:unauthenticated"


async def test_sessions_listed_and_revocable(client: Client, pool: asyncpg.Pool) -> None:
    actor = await make_actor(client, pool)
    second = await client.post("/v1/auth/login", json={"email": actor.email, "password": PASSWORD})
    other_token = second.json()["token"]
    listed = await client.get("/v1/auth/sessions", headers=actor.headers)
    assert listed.status_code == 200
    assert len(listed.json()) == 2
    me = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {other_token}"})
    assert me.status_code == 200
    ids = [s["id"] for s in listed.json()]
    # Revoke both from the first session; the second token stops working at once.
    for sid in ids:
        r = await client.post(f"/v1/auth/sessions/{sid}/revoke", headers=actor.headers)
        if r.status_code == 401:  # revoked our own session first
            break
        assert r.status_code == 204
    gone = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {other_token}"})
    mine = await client.get("/v1/auth/me", headers=actor.headers)
    assert gone.status_code == 401 or mine.status_code == 401


async def test_user_of_org_a_gets_404_for_org_b_objects(client: Client, pool: asyncpg.Pool) -> None:
    admin_a = await make_actor(client, pool, Role.ORG_ADMIN)
    admin_b = await make_actor(client, pool, Role.ORG_ADMIN)
    b_user = await client.get(f"/v1/users/{admin_b.user_id}", headers=admin_b.headers)
    assert b_user.status_code == 200
    crossed = await client.get(f"/v1/users/{admin_b.user_id}", headers=admin_a.headers)
    assert crossed.status_code == 404
    assert admin_b.email not in crossed.text
    # Indistinguishable from an id that exists nowhere: no hint that B's user is real.
    ghost = await client.get(f"/v1/users/{uuid.uuid4()}", headers=admin_a.headers)
    strip = ("instance",)
    assert {k: v for k, v in crossed.json().items() if k not in strip} == {
        k: v for k, v in ghost.json().items() if k not in strip
    }
    patched = await client.patch(
        f"/v1/users/{admin_b.user_id}", json={"is_active": False}, headers=admin_a.headers
    )
    assert patched.status_code == 404
    still = await client.get("/v1/auth/me", headers=admin_b.headers)
    assert still.status_code == 200  # nothing happened to B's account
    listed = await client.get("/v1/users", headers=admin_a.headers)
    assert [u["id"] for u in listed.json()["items"]] == [str(admin_a.user_id)]


async def test_roles_are_enforced(client: Client, pool: asyncpg.Pool) -> None:
    analyst = await make_actor(client, pool, Role.ANALYST)
    r = await client.get("/v1/users", headers=analyst.headers)
    assert r.status_code == 403
    assert r.json()["type"] == "urn:fairwatch:problem:forbidden"
    org = await client.get("/v1/org", headers=analyst.headers)
    assert org.status_code == 200
    assert org.json()["id"] == str(analyst.org_id)


async def test_admin_creates_pages_and_deactivates_users(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool)
    created = []
    for i in range(5):
        r = await client.post(
            "/v1/users",
            json={
                "email": f"cm{i}@example.org",
                "display_name": f"CM {i}",
                "role": "case_manager",
                "password": "a long enough passphrase",
            },
            headers=admin.headers,
        )
        assert r.status_code == 201, r.text
        created.append(r.json()["id"])
    seen: list[str] = []
    token = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if token:
            params["page_token"] = token
        page = await client.get("/v1/users", params=params, headers=admin.headers)
        assert page.status_code == 200
        seen += [u["id"] for u in page.json()["items"]]
        token = page.json().get("next_page_token")
        if not token:
            break
    assert sorted(seen) == sorted([*created, str(admin.user_id)])
    assert len(seen) == len(set(seen))

    login = await client.post(
        "/v1/auth/login", json={"email": "cm0@example.org", "password": "a long enough passphrase"}
    )
    cm_headers = {"Authorization": f"Bearer {login.json()['token']}"}
    off = await client.patch(
        f"/v1/users/{created[0]}", json={"is_active": False}, headers=admin.headers
    )
    assert off.status_code == 200
    assert off.json()["is_active"] is False
    assert (await client.get("/v1/auth/me", headers=cm_headers)).status_code == 401


async def test_duplicate_email_and_weak_password(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool)
    body = {"email": admin.email, "display_name": "x", "role": "analyst", "password": "p" * 3}
    weak = await client.post("/v1/users", json=body, headers=admin.headers)
    assert weak.status_code == 422
    assert weak.json()["errors"][0]["field"] == "password"
    body["password"] = "another fine passphrase"
    dup = await client.post("/v1/users", json=body, headers=admin.headers)
    assert dup.status_code == 409
    assert dup.json()["type"] == "urn:fairwatch:problem:already-exists"


async def test_unknown_ids_are_404_not_500(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool)
    r = await client.get(f"/v1/users/{uuid.uuid4()}", headers=admin.headers)
    assert r.status_code == 404
    bad = await client.get("/v1/users/not-a-uuid", headers=admin.headers)
    assert bad.status_code in (400, 404, 422)
    assert bad.headers["content-type"].startswith("application/problem+json")
