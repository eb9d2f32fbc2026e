"""Envelope encryption: round trips, binding to org and context, nothing readable at rest,
race-free first keys, rotation of data keys and master keys, and master key file handling."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import uuid
from pathlib import Path

import asyncpg
import msgspec
import pytest

from storage.accounts import OrgRepository
from storage.db import Conn
from storage.errors import NotFound
from storage.keyring import (
    DecryptionFailed,
    Keyring,
    MasterKey,
    MasterKeyError,
    MasterKeys,
    MasterKeyUnavailable,
    data_keys_by_master,
    load_master_keys,
    rotate_master_key,
    unwrap_data_key,
)
from tests.conftest import truncate_all

pytestmark = pytest.mark.db

SECRET = b"Siti Rahayu, passport B1234567, +60 12-345 6789"


class WorkerIdentity(msgspec.Struct, frozen=True):
    name: str
    passport: str
    phone: str | None = None


def _keyring(master: MasterKey, *previous: MasterKey) -> Keyring:
    return Keyring(MasterKeys(master, previous))


async def _org(conn: Conn, slug: str | None = None) -> uuid.UUID:
    org = await OrgRepository(conn).add(slug or f"org-{uuid.uuid4().hex[:12]}", "Test org")
    return org.id


def _context(report: uuid.UUID) -> bytes:
    return f"reports.worker_identity:{report}".encode()


async def test_round_trip_of_bytes_and_structs(db: asyncpg.Connection) -> None:
    keyring = _keyring(MasterKey.generate())
    org, report = await _org(db), uuid.uuid4()
    ciphertext = await keyring.encrypt(db, org, SECRET, _context(report))
    assert ciphertext[0] == 1  # format byte
    assert int.from_bytes(ciphertext[1:5], "big") == 1  # first data key version
    assert len(ciphertext) == 1 + 4 + 12 + len(SECRET) + 16
    assert await keyring.decrypt(db, org, ciphertext, _context(report)) == SECRET

    identity = WorkerIdentity("Siti Rahayu", "B1234567", "+60123456789")
    sealed = await keyring.encrypt_struct(db, org, identity, _context(report))
    opened = await keyring.decrypt_struct(db, org, sealed, _context(report), WorkerIdentity)
    assert opened == identity
    # Random nonces: the same plaintext never gives the same ciphertext.
    assert await keyring.encrypt(db, org, SECRET, _context(report)) != ciphertext


async def test_ciphertext_is_bound_to_org_and_context(db: asyncpg.Connection) -> None:
    keyring = _keyring(MasterKey.generate())
    org, other_org = await _org(db), await _org(db)
    report = uuid.uuid4()
    ciphertext = await keyring.encrypt(db, org, SECRET, _context(report))
    await keyring.encrypt(db, other_org, b"gives the other org a key", b"x")

    with pytest.raises(DecryptionFailed):  # copied to another row
        await keyring.decrypt(db, org, ciphertext, _context(uuid.uuid4()))
    with pytest.raises(DecryptionFailed):  # copied to another column
        await keyring.decrypt(db, org, ciphertext, f"reports.contact:{report}".encode())
    with pytest.raises(DecryptionFailed):  # copied to another organisation
        await keyring.decrypt(db, other_org, ciphertext, _context(report))
    with pytest.raises(DecryptionFailed):  # an organisation without any key
        await keyring.decrypt(db, await _org(db), ciphertext, _context(report))
    tampered = bytearray(ciphertext)
    tampered[-20] ^= 1
    with pytest.raises(DecryptionFailed):
        await keyring.decrypt(db, org, bytes(tampered), _context(report))
    with pytest.raises(DecryptionFailed, match="too short"):
        await keyring.decrypt(db, org, ciphertext[:20], _context(report))
    # A fresh process (empty cache) refuses the same things.
    with pytest.raises(DecryptionFailed):
        await Keyring(keyring.masters).decrypt(db, other_org, ciphertext, _context(report))


async def test_nothing_readable_at_rest(db: asyncpg.Connection) -> None:
    master = MasterKey.generate()
    keyring = _keyring(master)
    org, report = await _org(db), uuid.uuid4()
    ciphertext = await keyring.encrypt(db, org, SECRET, _context(report))
    await db.execute("CREATE TEMP TABLE sealed_reports (id uuid, worker_identity bytea)")
    await db.execute("INSERT INTO sealed_reports VALUES ($1, $2)", report, ciphertext)

    [key_row] = await db.fetch("SELECT * FROM org_data_keys WHERE org_id = $1", org)
    data_key = unwrap_data_key(master, org, 1, key_row["wrapped_key"])
    master_secret = base64.b64decode(master.to_base64())
    key_dump = b"".join(str(v).encode() + (v if isinstance(v, bytes) else b"") for v in key_row)
    key_text = await db.fetchval("SELECT t::text FROM org_data_keys t WHERE org_id = $1", org)
    for secret in (data_key, master_secret):
        assert secret not in key_dump
        assert secret.hex() not in key_text

    [sealed_row] = await db.fetch("SELECT * FROM sealed_reports")
    sealed_text = await db.fetchval("SELECT t::text FROM sealed_reports t")
    assert SECRET not in sealed_row["worker_identity"]
    assert b"B1234567" not in sealed_row["worker_identity"]
    assert SECRET.hex() not in sealed_text and "B1234567" not in sealed_text


async def test_concurrent_first_use_creates_one_key(pool: asyncpg.Pool) -> None:
    master = MasterKey.generate()
    # Two keyrings: two processes, so no shared cache can hide a second key.
    first, second = _keyring(master), _keyring(master)
    try:
        async with pool.acquire() as setup:
            org = await _org(setup)
        async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as observer:
            tx_a = a.transaction()
            await tx_a.start()
            sealed_a = await first.encrypt(a, org, b"from a", b"ctx")  # inserts v1, uncommitted

            async def encrypt_in_b() -> bytes:
                async with b.transaction():
                    return await second.encrypt(b, org, b"from b", b"ctx")

            b_pid = b.get_server_pid()
            task = asyncio.create_task(encrypt_in_b())
            # B saw no committed key and now waits on A's uncommitted one: a real race.
            while not await observer.fetchval(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", b_pid
            ):
                assert not task.done(), "B did not wait for A's key"
                await asyncio.sleep(0.01)  # polling for a condition, not timing anything
            await tx_a.commit()
            sealed_b = await task

            assert (
                await observer.fetchval("SELECT count(*) FROM org_data_keys WHERE org_id = $1", org)
                == 1
            )
            assert await second.decrypt(observer, org, sealed_a, b"ctx") == b"from a"
            assert await first.decrypt(observer, org, sealed_b, b"ctx") == b"from b"
    finally:
        await truncate_all(pool)


async def test_key_created_in_rolled_back_transaction_is_never_used(
    db: asyncpg.Connection,
) -> None:
    keyring = _keyring(MasterKey.generate())
    org = await _org(db)
    savepoint = db.transaction()
    await savepoint.start()
    await keyring.encrypt(db, org, b"lost", b"ctx")
    await savepoint.rollback()
    assert await db.fetchval("SELECT count(*) FROM org_data_keys WHERE org_id = $1", org) == 0

    ciphertext = await keyring.encrypt(db, org, b"kept", b"ctx")
    # Another process, which only knows what is stored, can read it.
    assert await Keyring(keyring.masters).decrypt(db, org, ciphertext, b"ctx") == b"kept"


async def test_data_key_rotation_keeps_old_versions_readable(db: asyncpg.Connection) -> None:
    keyring = _keyring(MasterKey.generate())
    org = await _org(db)
    old = await keyring.encrypt(db, org, b"old", b"ctx")
    assert await keyring.rotate_data_key(db, org) == 2
    new = await keyring.encrypt(db, org, b"new", b"ctx")
    assert int.from_bytes(new[1:5], "big") == 2
    fresh = Keyring(keyring.masters)
    assert await fresh.decrypt(db, org, old, b"ctx") == b"old"
    assert await fresh.decrypt(db, org, new, b"ctx") == b"new"
    retired = await db.fetch(
        "SELECT version, retired_at IS NOT NULL AS retired FROM org_data_keys "
        "WHERE org_id = $1 ORDER BY version",
        org,
    )
    assert [(r["version"], r["retired"]) for r in retired] == [(1, True), (2, False)]


async def test_rotating_a_keyless_org_creates_its_first_key(db: asyncpg.Connection) -> None:
    keyring = _keyring(MasterKey.generate())
    org = await _org(db)
    assert await keyring.rotate_data_key(db, org) == 1
    # A failed statement aborts the enclosing transaction, hence the savepoints.
    with pytest.raises(NotFound):
        async with db.transaction():
            await keyring.rotate_data_key(db, uuid.uuid4())
    with pytest.raises(NotFound):
        async with db.transaction():
            await keyring.encrypt(db, uuid.uuid4(), b"x", b"ctx")


async def test_master_key_rotation(db: asyncpg.Connection) -> None:
    old_master, new_master = MasterKey.generate(), MasterKey.generate()
    before = _keyring(old_master)
    org, other_org = await _org(db), await _org(db)
    first = await before.encrypt(db, org, b"v1", b"ctx")
    await before.rotate_data_key(db, org)
    second = await before.encrypt(db, org, b"v2", b"ctx")
    third = await before.encrypt(db, other_org, b"other", b"ctx")

    # During the rollout every process knows both keys; the new one wraps.
    during = _keyring(new_master, old_master)
    assert await rotate_master_key(db, during, new_master, batch_size=2) == 3
    assert await data_keys_by_master(db) == {new_master.key_id: 3}
    assert await rotate_master_key(db, during, new_master) == 0  # nothing left to do

    after = _keyring(new_master)
    assert await after.decrypt(db, org, first, b"ctx") == b"v1"
    assert await after.decrypt(db, org, second, b"ctx") == b"v2"
    assert await after.decrypt(db, other_org, third, b"ctx") == b"other"
    # A process still on only the old master cannot unwrap the re-wrapped keys.
    with pytest.raises(MasterKeyUnavailable, match=new_master.key_id):
        await _keyring(old_master).decrypt(db, org, first, b"ctx")
    # The old key is not a secret spare for the new id either: a forged id fails to unwrap.
    assert old_master.key_id != new_master.key_id


# --- master key loading ----------------------------------------------------------------------


def _b64(key: MasterKey) -> str:
    return key.to_base64()


def test_key_from_value_with_previous_keys() -> None:
    current, old = MasterKey.generate(), MasterKey.generate()
    keys = load_master_keys(_b64(current), None, [_b64(old), _b64(old), _b64(current)], None)
    assert keys.current == current
    assert keys.previous == (old,)  # duplicates and the current key dropped
    assert not keys.generated
    assert keys.find(old.key_id) == old
    assert keys.find("0" * 16) is None
    assert len(current.key_id) == 16 and current.key_id in repr(current)
    assert _b64(current) not in repr(keys)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"short").decode(), "must be 32 random bytes"),
    ],
)
def test_bad_key_values_are_refused(value: str, message: str) -> None:
    with pytest.raises(MasterKeyError, match=message):
        load_master_keys(value, None, [], None)
    with pytest.raises(MasterKeyError, match="previous master key #1"):
        load_master_keys(_b64(MasterKey.generate()), None, [value], None)


def test_missing_or_ambiguous_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="no master key configured"):
        load_master_keys(None, None, [], None)
    with pytest.raises(MasterKeyError, match="not both"):
        load_master_keys(_b64(MasterKey.generate()), tmp_path / "k", [], None)
    with pytest.raises(MasterKeyError, match="does not exist"):
        load_master_keys(None, tmp_path / "absent.key", [], None)


def test_key_file_with_group_or_other_access_is_refused(tmp_path: Path) -> None:
    key = MasterKey.generate()
    path = tmp_path / "master.key"
    path.write_text(_b64(key) + "\n")
    for mode in (0o644, 0o640, 0o604, 0o620):
        path.chmod(mode)
        with pytest.raises(MasterKeyError, match=f"mode {mode:04o}.*chmod 600"):
            load_master_keys(None, path, [], None)
    path.chmod(0o400)
    assert load_master_keys(None, path, [], None).current == key
    path.chmod(0o600)
    loaded = load_master_keys(None, path, [], None)
    assert loaded.current == key and not loaded.generated and loaded.source == str(path)


def test_key_file_must_hold_base64(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    with pytest.raises(MasterKeyError, match="base64"):
        load_master_keys(None, path, [], None)


def test_generated_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.key"
    created = load_master_keys(None, None, [], path)
    assert created.generated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temp file left
    again = load_master_keys(None, None, [], path)
    assert not again.generated
    assert again.current == created.current
    # An explicit value wins over the development default.
    other = MasterKey.generate()
    assert load_master_keys(_b64(other), None, [], path).current == other
