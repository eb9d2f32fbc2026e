"""Envelope encryption of sensitive fields: per-organisation data keys wrapped by a master key.

A field is encrypted with AES-256-GCM under its organisation's current data key; data keys live
in ``org_data_keys`` only in wrapped form (AES-256-GCM under the master key, which is configured
outside the database). A database dump alone therefore reveals no names, contacts or documents.
The associated data binds every ciphertext to its organisation and a caller-chosen context (the
table, column and row it belongs to), so a ciphertext copied elsewhere fails to decrypt.

Ciphertext layout: format byte (1) | data key version (uint32, big-endian) | nonce (12) |
AES-GCM ciphertext and tag. See docs/decisions/0106-envelope-encryption.md.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import os
import secrets
import stat
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

import asyncpg
import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.db import Conn
from storage.errors import NotFound, StorageError
from storage.queries import Q

__all__ = [
    "DecryptionFailed",
    "Keyring",
    "KeyringError",
    "MasterKey",
    "MasterKeyError",
    "MasterKeyUnavailable",
    "MasterKeys",
    "data_keys_by_master",
    "load_master_keys",
    "rotate_master_key",
    "unwrap_data_key",
    "wrap_data_key",
]

T = TypeVar("T")

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
FORMAT_V1 = 1
_HEADER = struct.Struct(">BI")
# Domain separation: the same key material can never be confused between purposes.
_KEY_ID_DOMAIN = b"fairwatch.master-key-id\x00"
_WRAP_AAD = b"fairwatch.data-key.v1\x00"
_FIELD_AAD = b"fairwatch.field.v1\x00"
_MAX_KEY_FILE = 4096


class KeyringError(StorageError):
    """Base class of the keyring's errors."""


class MasterKeyError(KeyringError):
    """The master key configuration is unusable; the message says which source and why."""


class MasterKeyUnavailable(KeyringError):
    """A data key is wrapped under a master key this process was not given."""

    def __init__(self, master_key_id: str, org_id: uuid.UUID, version: int) -> None:
        super().__init__(
            f"data key {version} of organisation {org_id} is wrapped under master key "
            f"{master_key_id}, which is not configured (add it as a previous master key)"
        )
        self.master_key_id = master_key_id


class DecryptionFailed(KeyringError):
    """Wrong organisation or context, a tampered or truncated ciphertext, or an unknown key.

    The causes are deliberately not told apart to callers beyond ``reason``, which holds no
    secret material and is meant for logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"decryption failed: {reason}")
        self.reason = reason


class MasterKey:
    """32 secret bytes and their public id. A plain class, so msgspec can never serialise it."""

    __slots__ = ("_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise MasterKeyError(f"a master key is {KEY_BYTES} bytes, got {len(secret)}")
        self._secret = bytes(secret)
        self.key_id = hashlib.sha256(_KEY_ID_DOMAIN + self._secret).hexdigest()[:16]

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_base64(cls, value: str, source: str) -> MasterKey:
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise MasterKeyError(f"{source} is not valid base64") from None
        if len(raw) != KEY_BYTES:
            raise MasterKeyError(
                f"{source} must be {KEY_BYTES} random bytes in base64 "
                f"(e.g. `openssl rand -base64 32`), got {len(raw)} bytes"
            )
        return cls(raw)

    def to_base64(self) -> str:
        return base64.b64encode(self._secret).decode("ascii")

    def aead(self) -> AESGCM:
        return AESGCM(self._secret)

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MasterKey) and secrets.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self.key_id)


class MasterKeys(msgspec.Struct, frozen=True):
    """The master key that wraps new data keys, and older ones kept to unwrap (never to wrap)."""

    current: MasterKey
    previous: tuple[MasterKey, ...] = ()
    generated: bool = False
    """True when the key was created just now (the CLI should say where it was written)."""
    source: str = "value"

    def find(self, key_id: str) -> MasterKey | None:
        for key in (self.current, *self.previous):
            if key.key_id == key_id:
                return key
        return None


def load_master_keys(
    value_b64: str | None,
    file: Path | None,
    previous_b64: list[str],
    generate_into: Path | None,
) -> MasterKeys:
    """Master keys from a base64 value, else a key file, else one generated into a file.

    ``generate_into`` is the development default (``<data_dir>/master.key``): the file is read
    if present, otherwise created with mode 0600. Keys in ``previous_b64`` only unwrap.
    """
    if value_b64 and file is not None:
        raise MasterKeyError("configure either a master key value or a master key file, not both")
    generated = False
    if value_b64:
        current = MasterKey.from_base64(value_b64, "the master key value")
        source = "value"
    elif file is not None:
        current = _read_key_file(file)
        source = str(file)
    elif generate_into is not None:
        current, generated = _read_or_generate(generate_into)
        source = str(generate_into)
    else:
        raise MasterKeyError("no master key configured (give a base64 value or a key file)")
    previous: list[MasterKey] = []
    for n, raw in enumerate(previous_b64, start=1):
        key = MasterKey.from_base64(raw, f"previous master key #{n}")
        if key != current and key not in previous:
            previous.append(key)
    return MasterKeys(current, tuple(previous), generated, source)


def _read_key_file(path: Path) -> MasterKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MasterKeyError(f"master key file {path} does not exist") from None
    except OSError as exc:
        raise MasterKeyError(f"cannot open master key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        # fstat on the open descriptor: the checked file is the one read.
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise MasterKeyError(f"master key file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise MasterKeyError(
                f"master key file {path} is readable or writable by group or others "
                f"(mode {mode:04o}); restrict it with `chmod 600 {path}`"
            )
        data = handle.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise MasterKeyError(f"master key file {path} is too large to be a key")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise MasterKeyError(f"master key file {path} must hold the key in base64") from None
    return MasterKey.from_base64(text, f"master key file {path}")


def _read_or_generate(path: Path) -> tuple[MasterKey, bool]:
    if path.exists():
        return _read_key_file(path), False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = MasterKey.generate()
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # Created with 0600 from the first instant (O_EXCL: never reuse someone else's file); the
    # fchmod makes the mode exact whatever the umask.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(key.to_base64().encode("ascii") + b"\n")
            out.flush()
            os.fsync(out.fileno())
        # link() publishes the complete file atomically and fails if the name exists, so two
        # processes starting together agree on one key.
        try:
            os.link(temp, path)
        except FileExistsError:
            return _read_key_file(path), False
    finally:
        temp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return key, True


def _wrap_aad(org_id: uuid.UUID, version: int) -> bytes:
    return _WRAP_AAD + org_id.bytes + version.to_bytes(4, "big")


def wrap_data_key(master: MasterKey, org_id: uuid.UUID, version: int, data_key: bytes) -> bytes:
    """``nonce | AES-GCM(master, data_key)`` bound to the organisation and version."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + master.aead().encrypt(nonce, data_key, _wrap_aad(org_id, version))


def unwrap_data_key(master: MasterKey, org_id: uuid.UUID, version: int, wrapped: bytes) -> bytes:
    try:
        return master.aead().decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(org_id, version)
        )
    except InvalidTag:
        raise KeyringError(
            f"data key {version} of organisation {org_id} does not unwrap under master key "
            f"{master.key_id}: the row was altered or belongs elsewhere"
        ) from None


def _unwrap_row(masters: MasterKeys, org_id: uuid.UUID, row: asyncpg.Record) -> bytes:
    master = masters.find(row["master_key_id"])
    if master is None:
        raise MasterKeyUnavailable(row["master_key_id"], org_id, row["version"])
    return unwrap_data_key(master, org_id, row["version"], row["wrapped_key"])


class _DataKey(NamedTuple):
    wrapped: bytes
    aead: AESGCM


class Keyring:
    """Encrypts and decrypts sensitive fields; one instance per process, shared by requests.

    Unwrapped data keys are cached (LRU, ``cache_size`` entries). The cache only ever saves an
    unwrap: encryption still reads the active key row, because a key first created inside a
    transaction that later rolled back must never be used again, and a decryption that fails
    under a cached key is retried once with the key as stored.
    """

    def __init__(self, masters: MasterKeys, *, cache_size: int = 1024) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._masters = masters
        self._cache: collections.OrderedDict[tuple[uuid.UUID, int], _DataKey] = (
            collections.OrderedDict()
        )
        self._cache_size = cache_size

    @property
    def masters(self) -> MasterKeys:
        return self._masters

    async def encrypt(
        self, conn: Conn, org_id: uuid.UUID, plaintext: bytes, context: bytes
    ) -> bytes:
        """Encrypt under the organisation's current data key, creating its first one if needed.

        ``context`` names where the ciphertext will live, e.g.
        ``b"reports.worker_identity:<report uuid>"``; decryption must give the same bytes.
        """
        version, key = await self._active_key(conn, org_id)
        header = _HEADER.pack(FORMAT_V1, version)
        nonce = secrets.token_bytes(NONCE_BYTES)
        return header + nonce + key.encrypt(nonce, plaintext, _field_aad(header, org_id, context))

    async def decrypt(
        self, conn: Conn, org_id: uuid.UUID, ciphertext: bytes, context: bytes
    ) -> bytes:
        if len(ciphertext) < _HEADER.size + NONCE_BYTES + TAG_BYTES:
            raise DecryptionFailed("ciphertext too short")
        fmt, version = _HEADER.unpack_from(ciphertext)
        if fmt != FORMAT_V1:
            raise DecryptionFailed(f"unknown ciphertext format {fmt}")
        header = ciphertext[: _HEADER.size]
        nonce = ciphertext[_HEADER.size : _HEADER.size + NONCE_BYTES]
        body = ciphertext[_HEADER.size + NONCE_BYTES :]
        aad = _field_aad(header, org_id, context)
        cached = self._cache.get((org_id, version))
        if cached is not None:
            try:
                return cached.aead.decrypt(nonce, body, aad)
            except InvalidTag:
                pass  # wrong context, or a stale cached key: decide with the stored key
        row = await conn.fetchrow(Q.get_data_key, org_id, version)
        if row is None:
            raise DecryptionFailed(f"organisation has no data key version {version}")
        key = self._remember(org_id, row)
        try:
            return key.decrypt(nonce, body, aad)
        except InvalidTag:
            raise DecryptionFailed("wrong organisation or context, or altered ciphertext") from None

    async def encrypt_struct(
        self, conn: Conn, org_id: uuid.UUID, value: object, context: bytes
    ) -> bytes:
        """Encrypt a whole sensitive sub-object (a msgspec Struct or any msgpack-able value)."""
        return await self.encrypt(conn, org_id, msgspec.msgpack.encode(value), context)

    async def decrypt_struct(
        self, conn: Conn, org_id: uuid.UUID, ciphertext: bytes, context: bytes, kind: type[T]
    ) -> T:
        plaintext = await self.decrypt(conn, org_id, ciphertext, context)
        return msgspec.msgpack.decode(plaintext, type=kind)

    async def struct_sealer(
        self, conn: Conn, org_id: uuid.UUID
    ) -> Callable[[object, bytes], bytes]:
        """Encrypt many values for one organisation with one key lookup (e.g. a push batch).

        Use it within one transaction: the key it holds is the active one at that moment.
        """
        version, key = await self._active_key(conn, org_id)
        header = _HEADER.pack(FORMAT_V1, version)

        def seal(value: object, context: bytes) -> bytes:
            nonce = secrets.token_bytes(NONCE_BYTES)
            plaintext = msgspec.msgpack.encode(value)
            return (
                header + nonce + key.encrypt(nonce, plaintext, _field_aad(header, org_id, context))
            )

        return seal

    async def rotate_data_key(self, conn: Conn, org_id: uuid.UUID) -> int:
        """Add a new data key version for new writes; older versions keep decrypting. Returns it."""
        async with conn.transaction():
            await conn.execute(Q.lock_data_key_rotation, org_id)
            # The advisory lock excludes other rotations, but not a concurrent first encryption
            # (which inserts version 1 without it): if that wins, go round once more.
            for _ in range(2):
                version: int = await conn.fetchval(Q.next_data_key_version, org_id)
                await conn.execute(Q.retire_active_data_key, org_id)
                wrapped = wrap_data_key(
                    self._masters.current, org_id, version, AESGCM.generate_key(bit_length=256)
                )
                try:
                    inserted = await conn.fetchval(
                        Q.insert_data_key, org_id, version, wrapped, self._masters.current.key_id
                    )
                except asyncpg.ForeignKeyViolationError:
                    raise NotFound("organisation", org_id) from None
                if inserted is not None:
                    return version
        raise KeyringError(f"could not add a data key version for organisation {org_id}")

    async def _active_key(self, conn: Conn, org_id: uuid.UUID) -> tuple[int, AESGCM]:
        row = await conn.fetchrow(Q.get_active_data_key, org_id)
        if row is None:
            wrapped = wrap_data_key(
                self._masters.current, org_id, 1, AESGCM.generate_key(bit_length=256)
            )
            try:
                await conn.execute(
                    Q.insert_first_data_key, org_id, wrapped, self._masters.current.key_id
                )
            except asyncpg.ForeignKeyViolationError:
                raise NotFound("organisation", org_id) from None
            row = await conn.fetchrow(Q.get_active_data_key, org_id)
            if row is None:  # only under REPEATABLE READ, where the winner is not yet visible
                raise KeyringError(f"organisation {org_id} has no visible data key; retry")
        return row["version"], self._remember(org_id, row)

    def _remember(self, org_id: uuid.UUID, row: asyncpg.Record) -> AESGCM:
        slot = (org_id, row["version"])
        cached = self._cache.get(slot)
        if cached is not None and cached.wrapped == row["wrapped_key"]:
            self._cache.move_to_end(slot)
            return cached.aead
        entry = _DataKey(row["wrapped_key"], AESGCM(_unwrap_row(self._masters, org_id, row)))
        self._cache[slot] = entry
        self._cache.move_to_end(slot)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return entry.aead


def _field_aad(header: bytes, org_id: uuid.UUID, context: bytes) -> bytes:
    # The org id has a fixed length, so appending the context cannot be ambiguous.
    return _FIELD_AAD + header + org_id.bytes + context


async def rotate_master_key(
    conn: Conn, keyring: Keyring, new_master: MasterKey, *, batch_size: int = 100
) -> int:
    """Re-wrap every data key under ``new_master``; return how many were re-wrapped.

    Data keys themselves do not change, so every ciphertext stays valid and processes that know
    either master key keep working throughout. Each batch is its own short transaction when
    ``conn`` is not already in one. ``keyring`` must know the master keys now in use.
    """
    total = 0
    while True:
        async with conn.transaction():
            rows = await conn.fetch(Q.lock_data_keys_to_rewrap, new_master.key_id, batch_size)
            for row in rows:
                data_key = _unwrap_row(keyring.masters, row["org_id"], row)
                wrapped = wrap_data_key(new_master, row["org_id"], row["version"], data_key)
                await conn.execute(
                    Q.rewrap_data_key, row["org_id"], row["version"], wrapped, new_master.key_id
                )
        total += len(rows)
        # A concurrent rotation can shrink a batch below the limit; only an empty one is the end.
        if not rows:
            return total


async def data_keys_by_master(conn: Conn) -> dict[str, int]:
    """How many data keys each master key wraps: a master key is removable once it has none."""
    rows = await conn.fetch(Q.count_data_keys_by_master)
    return {r["master_key_id"]: r["n"] for r in rows}
