"""``fairwatch keys`` and ``fairwatch audit`` as an operator runs them, against a real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.accounts import OrgRepository
from storage.audit import ActorKind, AuditEntry, record
from storage.db import connect, with_database
from storage.keyring import Keyring, MasterKey, MasterKeys
from storage.migrate import apply_migrations
from tests.conftest import create_scratch_database, drop_database
from tests.integration.test_cli import run_cli

pytestmark = pytest.mark.db

CONTEXT = b"reports.sealed:test"


@pytest.fixture
async def scratch_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """A database of its own: these tests tamper with the audit chain on purpose."""
    name = await create_scratch_database(pg_server_dsn, "fairwatch_protect")
    dsn = with_database(pg_server_dsn, name)
    conn = await connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        await drop_database(pg_server_dsn, name)


async def _seed(dsn: str, keyring: Keyring, slugs: list[str]) -> dict[str, bytes]:
    """Organisations with three audit entries and one sealed value each."""
    sealed = {}
    conn = await connect(dsn)
    try:
        for slug in slugs:
            org = await OrgRepository(conn).add(slug, slug)
            for n in range(3):
                await record(
                    conn,
                    AuditEntry(
                        org_id=org.id,
                        actor_kind=ActorKind.SYSTEM,
                        actor_id="test",
                        action="test.seed",
                        detail={"n": n},
                    ),
                )
            sealed[slug] = await keyring.encrypt(conn, org.id, slug.encode(), CONTEXT)
    finally:
        await conn.close()
    return sealed


def _env(dsn: str, tmp_path: Path, master: MasterKey, *previous: MasterKey) -> dict[str, str]:
    env = {
        "FAIRWATCH_DATABASE_URL": dsn,
        "FAIRWATCH_DATA_DIR": str(tmp_path),
        "FAIRWATCH_MASTER_KEY": master.to_base64(),
    }
    if previous:
        env["FAIRWATCH_PREVIOUS_MASTER_KEYS"] = ",".join(k.to_base64() for k in previous)
    return env


async def test_master_key_rotation_rewraps_and_old_key_can_go(
    scratch_dsn: str, tmp_path: Path
) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    sealed = await _seed(scratch_dsn, Keyring(MasterKeys(old)), ["rot-a", "rot-b"])

    status = run_cli("keys", "status", env=_env(scratch_dsn, tmp_path, old))
    assert status.returncode == 0, status.stderr
    assert f"master key {old.key_id} (current): 2 data keys" in status.stdout

    rotated = run_cli("keys", "rotate", env=_env(scratch_dsn, tmp_path, new, old))
    assert rotated.returncode == 0, rotated.stderr
    assert f"re-wrapped 2 data keys under master key {new.key_id}" in rotated.stdout
    assert "can be removed" in rotated.stdout
    again = run_cli("keys", "rotate", env=_env(scratch_dsn, tmp_path, new, old))
    assert "re-wrapped 0 data keys" in again.stdout

    # A process that knows only the new master key reads everything written under the old one.
    conn = await connect(scratch_dsn)
    try:
        only_new = Keyring(MasterKeys(new))
        for slug, ciphertext in sealed.items():
            org = await OrgRepository(conn).get_by_slug(slug)
            assert org is not None
            assert await only_new.decrypt(conn, org.id, ciphertext, CONTEXT) == slug.encode()
            actions = await conn.fetch(
                "SELECT action, actor_kind FROM audit_log WHERE org_id = $1 ORDER BY seq", org.id
            )
            assert ("keys.rotate_master_key", "system") in [tuple(r) for r in actions]
    finally:
        await conn.close()
    # The old key can leave the configuration: no data key needs it any more.
    status = run_cli("keys", "status", env=_env(scratch_dsn, tmp_path, new))
    assert f"master key {new.key_id} (current): 2 data keys" in status.stdout
    assert old.key_id not in status.stdout


async def test_data_key_rotation_for_one_org(scratch_dsn: str, tmp_path: Path) -> None:
    master = MasterKey.generate()
    keyring = Keyring(MasterKeys(master))
    sealed = await _seed(scratch_dsn, keyring, ["dk-a"])
    done = run_cli(
        "keys", "rotate-data-key", "--org", "dk-a", env=_env(scratch_dsn, tmp_path, master)
    )
    assert done.returncode == 0, done.stderr
    assert "new data key version 2" in done.stdout
    missing = run_cli(
        "keys", "rotate-data-key", "--org", "nope", env=_env(scratch_dsn, tmp_path, master)
    )
    assert missing.returncode == 1
    conn = await connect(scratch_dsn)
    try:
        org = await OrgRepository(conn).get_by_slug("dk-a")
        assert org is not None
        fresh = Keyring(MasterKeys(master))
        newer = await fresh.encrypt(conn, org.id, b"new", CONTEXT)
        assert int.from_bytes(newer[1:5], "big") == 2  # new writes use the new version
        assert await fresh.decrypt(conn, org.id, sealed["dk-a"], CONTEXT) == b"dk-a"
    finally:
        await conn.close()


async def test_audit_verify_and_heads_then_tampering_is_caught(
    scratch_dsn: str, tmp_path: Path
) -> None:
    master = MasterKey.generate()
    await _seed(scratch_dsn, Keyring(MasterKeys(master)), ["aud-a", "aud-b"])
    env = _env(scratch_dsn, tmp_path, master)

    ok = run_cli("audit", "verify", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.strip().splitlines()
    assert lines == ["aud-a: ok (3 entries)", "aud-b: ok (3 entries)"]

    heads = run_cli("audit", "heads", env=env)
    assert heads.returncode == 0
    conn = await connect(scratch_dsn)
    try:
        org_a = await OrgRepository(conn).get_by_slug("aud-a")
        assert org_a is not None
        head_hash = await conn.fetchval("SELECT hash FROM audit_heads WHERE org_id = $1", org_a.id)
        assert f"aud-a seq=3 hash={bytes(head_hash).hex()}" in heads.stdout
        # Someone with the table owner's rights rewrites history, past the append-only trigger.
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            await conn.execute(
                "UPDATE audit_log SET detail = '{\"n\": 99}' WHERE org_id = $1 AND seq = 2",
                org_a.id,
            )
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    finally:
        await conn.close()

    bad = run_cli("audit", "verify", env=env)
    assert bad.returncode == 1
    lines = bad.stdout.strip().splitlines()
    assert lines[0].startswith("aud-a: FAILED altered at entry 2")
    assert lines[1] == "aud-b: ok (3 entries)"
    only_b = run_cli("audit", "verify", "--org", "aud-b", env=env)
    assert only_b.returncode == 0
    assert only_b.stdout.strip() == "aud-b: ok (3 entries)"
    unknown = run_cli("audit", "verify", "--org", f"x{uuid.uuid4().hex[:8]}", env=env)
    assert unknown.returncode == 1
