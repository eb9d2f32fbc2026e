"""Staff accounts: TOTP second factor, admin-issued reset links, exponential lockout."""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import pyotp
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cases.accounts import Role
from server.routes.account_security import matching_step
from tests.api.conftest import PASSWORD, Actor, make_actor

pytestmark = pytest.mark.db

Client = AsyncTestClient[Litestar]


def _code(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


async def _login(client: Client, email: str, password: str = PASSWORD, **extra: Any) -> Any:
    return await client.post("/v1/auth/login", json={"email": email, "password": password, **extra})


async def _enable_totp(client: Client, actor: Actor) -> str:
    enrolled = await client.post("/v1/auth/totp/enroll", headers=actor.headers)
    assert enrolled.status_code == 201, enrolled.text
    secret: str = enrolled.json()["secret"]
    assert enrolled.json()["otpauth_uri"].startswith("otpauth://totp/")
    # Before confirmation login does not ask for a code.
    assert (await _login(client, actor.email)).status_code == 200
    confirmed = await client.post(
        "/v1/auth/totp/confirm", json={"code": _code(secret)}, headers=actor.headers
    )
    assert confirmed.status_code == 204, confirmed.text
    return secret


async def test_totp_enroll_confirm_login_and_replay(client: Client, pool: asyncpg.Pool) -> None:
    actor = await make_actor(client, pool, Role.CASE_MANAGER)
    secret = await _enable_totp(client, actor)
    status = await client.get("/v1/auth/totp", headers=actor.headers)
    assert status.json() == {"enabled": True}

    missing = await _login(client, actor.email)
    assert missing.status_code == 401
    assert missing.json()["type"] == "urn:fairwatch:problem:totp-required"
    wrong = await _login(
        client, actor.email, totp="000000" if _code(secret) != "000000" else "111111"
    )
    assert wrong.status_code == 401
    assert wrong.json()["type"] == "urn:fairwatch:problem:invalid-totp"
    # The confirmation used the current step; the next step's code logs in once, not twice.
    good = _code(secret, 1)
    assert (await _login(client, actor.email, totp=good)).status_code == 200
    replay = await _login(client, actor.email, totp=good)
    assert replay.status_code == 401
    assert replay.json()["type"] == "urn:fairwatch:problem:invalid-totp"
    # A wrong password with a good code is still just wrong credentials.
    bad_password = await _login(client, actor.email, "not the password", totp=_code(secret))
    assert bad_password.json()["type"] == "urn:fairwatch:problem:invalid-credentials"


async def test_totp_secret_is_sealed_at_rest(client: Client, pool: asyncpg.Pool) -> None:
    actor = await make_actor(client, pool)
    secret = await _enable_totp(client, actor)
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT t::text AS t FROM staff_totp t")
    assert row is not None
    assert secret not in row["t"]
    assert secret.encode().hex() not in row["t"]


async def test_totp_cannot_be_reenrolled_and_disable_needs_a_code(
    client: Client, pool: asyncpg.Pool
) -> None:
    actor = await make_actor(client, pool)
    secret = await _enable_totp(client, actor)
    again = await client.post("/v1/auth/totp/enroll", headers=actor.headers)
    assert again.status_code == 409
    assert again.json()["type"] == "urn:fairwatch:problem:totp-already-enabled"
    wrong = await client.post(
        "/v1/auth/totp/disable", json={"code": "12345x"}, headers=actor.headers
    )
    assert wrong.status_code == 422
    off = await client.post(
        "/v1/auth/totp/disable", json={"code": _code(secret, 1)}, headers=actor.headers
    )
    assert off.status_code == 204, off.text
    assert (await _login(client, actor.email)).status_code == 200


async def test_admin_removes_a_lost_second_factor_of_own_org_only(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool)
    member = await make_actor(client, pool, Role.ANALYST, org_slug=None)
    await _enable_totp(client, member)
    foreign = await client.delete(f"/v1/users/{member.user_id}/totp", headers=admin.headers)
    assert foreign.status_code == 404  # another organisation's user
    colleague = await make_actor(client, pool, Role.ANALYST, org_slug=await _slug(pool, admin))
    await _enable_totp(client, colleague)
    removed = await client.delete(f"/v1/users/{colleague.user_id}/totp", headers=admin.headers)
    assert removed.status_code == 204
    assert (await _login(client, colleague.email)).status_code == 200


async def _slug(pool: asyncpg.Pool, actor: Actor) -> str:
    async with pool.acquire() as conn:
        slug: str = await conn.fetchval("SELECT slug FROM orgs WHERE id = $1", actor.org_id)
    return slug


def test_matching_step_accepts_one_step_of_drift_only() -> None:
    secret = pyotp.random_base32()
    now = 1_700_000_000.0
    totp = pyotp.TOTP(secret)
    assert matching_step(secret, totp.at(now), now) == totp.timecode(now)
    assert matching_step(secret, totp.at(now - 30), now) == totp.timecode(now) - 1
    assert matching_step(secret, totp.at(now + 30), now) == totp.timecode(now) + 1
    assert matching_step(secret, totp.at(now - 90), now) is None


async def test_lockout_doubles_with_each_further_failure(
    client: Client, pool: asyncpg.Pool
) -> None:
    actor = await make_actor(client, pool)
    for _ in range(5):
        assert (await _login(client, actor.email, "wrong password")).status_code == 401
    first = await _login(client, actor.email)
    assert first.status_code == 429
    first_wait = int(first.headers["retry-after"])
    assert 30 <= first_wait <= 61
    # The lock expires (moved into the past here); the streak goes on, and the next lock doubles.
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE staff_users SET locked_until = now() - interval '1 second' WHERE id = $1",
            actor.user_id,
        )
    assert (await _login(client, actor.email, "wrong again")).status_code == 401
    second = await _login(client, actor.email)
    assert second.status_code == 429
    second_wait = int(second.headers["retry-after"])
    assert 2 * first_wait - 5 <= second_wait <= 121
    async with pool.acquire() as conn:
        actions = await conn.fetch(
            "SELECT action FROM audit_log WHERE org_id = $1 ORDER BY seq", actor.org_id
        )
    assert [r["action"] for r in actions].count("staff.login_failed") == 6


async def test_success_resets_the_streak(client: Client, pool: asyncpg.Pool) -> None:
    actor = await make_actor(client, pool)
    for _ in range(4):
        await _login(client, actor.email, "wrong password")
    assert (await _login(client, actor.email)).status_code == 200
    for _ in range(4):
        await _login(client, actor.email, "wrong password")
    assert (await _login(client, actor.email)).status_code == 200


async def test_password_reset_link_is_one_time_and_signs_out(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool)
    member = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=await _slug(pool, admin))
    issued = await client.post(f"/v1/users/{member.user_id}/password-reset", headers=admin.headers)
    assert issued.status_code == 201, issued.text
    url: str = issued.json()["reset_url"]
    token = url.split("#token=", 1)[1]
    async with pool.acquire() as conn:
        dump = await conn.fetchval("SELECT string_agg(p::text, ' ') FROM password_resets p")
    assert dump  # stored, but only as a hash
    assert token not in dump

    weak = await client.post(
        "/v1/auth/password-reset", json={"token": token, "new_password": "short"}
    )
    assert weak.status_code == 422  # refused before the token is spent
    new_password = "a brand new passphrase"
    done = await client.post(
        "/v1/auth/password-reset", json={"token": token, "new_password": new_password}
    )
    assert done.status_code == 204, done.text
    assert (await client.get("/v1/auth/me", headers=member.headers)).status_code == 401
    assert (await _login(client, member.email, new_password)).status_code == 200
    again = await client.post(
        "/v1/auth/password-reset", json={"token": token, "new_password": "yet another passphrase"}
    )
    assert again.status_code == 400
    assert again.json()["type"] == "urn:fairwatch:problem:invalid-reset-token"


async def test_new_reset_link_voids_the_old_and_other_orgs_get_404(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool)
    other_admin = await make_actor(client, pool)
    first = await client.post(f"/v1/users/{admin.user_id}/password-reset", headers=admin.headers)
    second = await client.post(f"/v1/users/{admin.user_id}/password-reset", headers=admin.headers)
    old = first.json()["reset_url"].split("#token=", 1)[1]
    stale = await client.post(
        "/v1/auth/password-reset", json={"token": old, "new_password": "a brand new passphrase"}
    )
    assert stale.status_code == 400
    assert second.status_code == 201
    crossed = await client.post(
        f"/v1/users/{admin.user_id}/password-reset", headers=other_admin.headers
    )
    assert crossed.status_code == 404
    unknown = await client.post(f"/v1/users/{uuid.uuid4()}/password-reset", headers=admin.headers)
    assert unknown.status_code == 404


async def test_expired_reset_link_is_refused(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool)
    issued = await client.post(f"/v1/users/{admin.user_id}/password-reset", headers=admin.headers)
    token = issued.json()["reset_url"].split("#token=", 1)[1]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE password_resets SET expires_at = now() - interval '1 minute'")
    late = await client.post(
        "/v1/auth/password-reset", json={"token": token, "new_password": "a brand new passphrase"}
    )
    assert late.status_code == 400
    assert (await _login(client, admin.email)).status_code == 200
