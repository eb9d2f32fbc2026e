"""The audit log: append-only, hash-chained per organisation, written in the caller's transaction.

Entry n of an organisation stores ``prev_hash`` (entry n-1's hash; 32 zero bytes for the first)
and ``hash = sha256(canonical encoding of the entry and prev_hash)``; ``audit_heads`` holds the
last seq and hash. ``verify_chain`` recomputes everything, so a rewritten, removed, reordered or
truncated history is detected even by someone who could bypass the database's append-only
triggers. See docs/decisions/0107-audit-chain.md for the encoding and the recommended actions.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
import msgspec

from storage.db import Conn
from storage.errors import NotFound
from storage.queries import Q

__all__ = [
    "GENESIS_HASH",
    "ActorKind",
    "AuditEntry",
    "AuditRecord",
    "ChainHead",
    "ChainProblem",
    "OrgVerification",
    "VerifyReport",
    "chain_hash",
    "chain_heads",
    "list_entries",
    "record",
    "record_staff",
    "record_system",
    "verify_chain",
]

GENESIS_HASH = bytes(32)
MAX_DETAIL_BYTES = 16 * 1024
MAX_LIST_LIMIT = 1000
_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_DOMAIN = b"fairwatch.audit.v1\x00"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NULL = b"\xff\xff\xff\xff"
# How far from its position an entry may have been moved and still be reported as "reordered"
# rather than "altered" (both are failures; this only sharpens the explanation).
_REORDER_WINDOW = 1024


class ActorKind(StrEnum):
    STAFF = "staff"
    DEVICE = "device"
    SYSTEM = "system"


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What happened. ``detail`` holds identifiers and counts, never the sensitive values."""

    org_id: uuid.UUID
    actor_kind: ActorKind
    actor_id: str
    action: str
    object_kind: str | None = None
    object_id: str | None = None
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    org_id: uuid.UUID
    seq: int
    at: datetime
    actor_kind: ActorKind
    actor_id: str
    action: str
    object_kind: str | None
    object_id: str | None
    detail: dict[str, Any]
    prev_hash: bytes
    hash: bytes


class ChainHead(msgspec.Struct, frozen=True):
    """An organisation's last entry; worth copying somewhere the database's owner cannot reach."""

    org_id: uuid.UUID
    seq: int
    hash: bytes


class ChainProblem(StrEnum):
    ALTERED = "altered"
    MISSING = "missing"
    REORDERED = "reordered"
    HEAD_MISMATCH = "head_mismatch"


class OrgVerification(msgspec.Struct, frozen=True, kw_only=True):
    org_id: uuid.UUID
    entries_checked: int
    """Entries verified good, in order from the first, before any problem."""
    head_seq: int
    problem: ChainProblem | None = None
    first_bad_seq: int | None = None
    explanation: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class VerifyReport(msgspec.Struct, frozen=True):
    orgs: list[OrgVerification]

    @property
    def ok(self) -> bool:
        return all(org.ok for org in self.orgs)


def _field(value: bytes | None) -> bytes:
    if value is None:
        return _NULL
    return len(value).to_bytes(4, "big") + value


def _text(value: str | None) -> bytes:
    return _field(None if value is None else value.encode("utf-8"))


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


class _Encoded(msgspec.Struct, frozen=True):
    """The canonical encoding split around seq, so candidate positions hash cheaply."""

    before_seq: bytes
    after_seq: bytes

    def hash_at(self, seq: int) -> bytes:
        return hashlib.sha256(
            self.before_seq + _field(seq.to_bytes(8, "big", signed=True)) + self.after_seq
        ).digest()


def _encode(
    org_id: uuid.UUID,
    at: datetime,
    actor_kind: str,
    actor_id: str,
    action: str,
    object_kind: str | None,
    object_id: str | None,
    detail_json: str,
    prev_hash: bytes,
) -> _Encoded:
    # Every field is length-prefixed (NULL has its own marker), so no two different entries
    # share an encoding. Time is whole microseconds since the epoch, PostgreSQL's precision.
    return _Encoded(
        _DOMAIN + _field(org_id.bytes),
        _field(_micros(at).to_bytes(8, "big", signed=True))
        + _text(actor_kind)
        + _text(actor_id)
        + _text(action)
        + _text(object_kind)
        + _text(object_id)
        + _text(detail_json)
        + _field(prev_hash),
    )


def chain_hash(
    *,
    org_id: uuid.UUID,
    seq: int,
    at: datetime,
    actor_kind: str,
    actor_id: str,
    action: str,
    object_kind: str | None,
    object_id: str | None,
    detail_json: str,
    prev_hash: bytes,
) -> bytes:
    """The hash of one entry. ``detail_json`` is PostgreSQL's text form of the jsonb detail."""
    encoded = _encode(
        org_id, at, actor_kind, actor_id, action, object_kind, object_id, detail_json, prev_hash
    )
    return encoded.hash_at(seq)


def _check(entry: AuditEntry) -> str:
    if not _ACTION.fullmatch(entry.action) or len(entry.action) > 100:
        raise ValueError(f"audit action must look like 'report.read_sensitive': {entry.action!r}")
    if not 1 <= len(entry.actor_id) <= 200:
        raise ValueError("audit actor_id must be 1 to 200 characters")
    detail = msgspec.json.encode(entry.detail).decode()
    if len(detail) > MAX_DETAIL_BYTES:
        raise ValueError(f"audit detail is larger than {MAX_DETAIL_BYTES} bytes")
    return detail


async def record(conn: Conn, entry: AuditEntry) -> AuditRecord:
    """Append ``entry`` to its organisation's chain, in the caller's transaction.

    The entry commits or rolls back with the change it records. Appenders of one organisation
    queue on its head row until the holder's transaction ends, so keep audited transactions short.
    """
    detail = _check(entry)
    if conn.is_in_transaction():
        return await _append(conn, entry, detail)
    async with conn.transaction():
        return await _append(conn, entry, detail)


async def record_staff(
    conn: Conn,
    org_id: uuid.UUID,
    user_id: uuid.UUID,
    action: str,
    object_kind: str | None = None,
    object_id: object = None,
    **detail: Any,
) -> AuditRecord:
    """``record`` an action a staff member took on ``object_kind``/``object_id``."""
    return await _record_as(
        conn, org_id, ActorKind.STAFF, str(user_id), action, object_kind, object_id, detail
    )


async def record_system(
    conn: Conn,
    org_id: uuid.UUID,
    part: str,
    action: str,
    object_kind: str | None = None,
    object_id: object = None,
    **detail: Any,
) -> AuditRecord:
    """``record`` an action the system took by itself; ``part`` names what did it (retention)."""
    return await _record_as(
        conn, org_id, ActorKind.SYSTEM, part, action, object_kind, object_id, detail
    )


async def _record_as(
    conn: Conn,
    org_id: uuid.UUID,
    actor_kind: ActorKind,
    actor_id: str,
    action: str,
    object_kind: str | None,
    object_id: object,
    detail: dict[str, Any],
) -> AuditRecord:
    entry = AuditEntry(
        org_id=org_id,
        actor_kind=actor_kind,
        actor_id=actor_id,
        action=action,
        object_kind=object_kind,
        object_id=None if object_id is None else str(object_id),
        detail=detail,
    )
    return await record(conn, entry)


async def _append(conn: Conn, entry: AuditEntry, detail: str) -> AuditRecord:
    head = await conn.fetchrow(Q.lock_audit_head, entry.org_id, detail)
    if head is None:
        # Concurrent first appends: the loser waits for the winner's commit and inserts nothing.
        try:
            await conn.execute(Q.ensure_audit_head, entry.org_id, GENESIS_HASH)
        except asyncpg.ForeignKeyViolationError:
            raise NotFound("organisation", entry.org_id) from None
        head = await conn.fetchrow(Q.lock_audit_head, entry.org_id, detail)
        assert head is not None
    seq: int = head["seq"] + 1
    at: datetime = head["at"]
    canonical: str = head["detail"]
    prev_hash: bytes = head["hash"]
    digest = chain_hash(
        org_id=entry.org_id,
        seq=seq,
        at=at,
        actor_kind=entry.actor_kind.value,
        actor_id=entry.actor_id,
        action=entry.action,
        object_kind=entry.object_kind,
        object_id=entry.object_id,
        detail_json=canonical,
        prev_hash=prev_hash,
    )
    await conn.execute(
        Q.insert_audit_entry,
        entry.org_id,
        seq,
        at,
        entry.actor_kind.value,
        entry.actor_id,
        entry.action,
        entry.object_kind,
        entry.object_id,
        canonical,
        prev_hash,
        digest,
    )
    await conn.execute(Q.advance_audit_head, entry.org_id, seq, digest)
    return AuditRecord(
        org_id=entry.org_id,
        seq=seq,
        at=at,
        actor_kind=entry.actor_kind,
        actor_id=entry.actor_id,
        action=entry.action,
        object_kind=entry.object_kind,
        object_id=entry.object_id,
        detail=msgspec.json.decode(canonical),
        prev_hash=prev_hash,
        hash=digest,
    )


async def list_entries(
    conn: Conn, org_id: uuid.UUID, after_seq: int = 0, limit: int = 100
) -> list[AuditRecord]:
    """A page of an organisation's entries in chain order, for the org-admin API."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    rows = await conn.fetch(Q.list_audit_entries, org_id, after_seq, limit)
    return [
        AuditRecord(
            org_id=r["org_id"],
            seq=r["seq"],
            at=r["at"],
            actor_kind=ActorKind(r["actor_kind"]),
            actor_id=r["actor_id"],
            action=r["action"],
            object_kind=r["object_kind"],
            object_id=r["object_id"],
            detail=msgspec.json.decode(r["detail"]),
            prev_hash=r["prev_hash"],
            hash=r["hash"],
        )
        for r in rows
    ]


async def chain_heads(conn: Conn) -> list[ChainHead]:
    rows = await conn.fetch(Q.list_audit_heads)
    return [ChainHead(r["org_id"], r["seq"], r["hash"]) for r in rows]


async def verify_chain(
    conn: Conn, org_id: uuid.UUID | None = None, *, prefetch: int = 500
) -> VerifyReport:
    """Recompute the chain of one organisation, or of every one, streaming rows with a cursor.

    Outside a transaction each organisation is read in its own read-only REPEATABLE READ
    snapshot, so appends running meanwhile cannot look like a head mismatch. Inside the
    caller's transaction, that transaction's snapshot rules apply.
    """
    if org_id is not None:
        org_ids = [org_id]
    else:
        org_ids = [r["id"] for r in await conn.fetch(Q.list_audit_org_ids)]
    results: list[OrgVerification] = []
    for org in org_ids:
        if conn.is_in_transaction():
            results.append(await _verify_org(conn, org, prefetch))
        else:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                results.append(await _verify_org(conn, org, prefetch))
    return VerifyReport(results)


async def _verify_org(conn: Conn, org_id: uuid.UUID, prefetch: int) -> OrgVerification:
    head = await conn.fetchrow(Q.get_audit_head, org_id)
    head_seq: int = 0 if head is None else head["seq"]
    head_hash: bytes = GENESIS_HASH if head is None else head["hash"]
    expected = 1
    prev = GENESIS_HASH

    def bad(problem: ChainProblem, seq: int, why: str) -> OrgVerification:
        return OrgVerification(
            org_id=org_id,
            entries_checked=expected - 1,
            head_seq=head_seq,
            problem=problem,
            first_bad_seq=seq,
            explanation=why,
        )

    async for row in conn.cursor(Q.stream_audit_chain, org_id, prefetch=prefetch):
        seq: int = row["seq"]
        if seq != expected:
            return bad(ChainProblem.MISSING, expected, f"entry {expected} is missing (next: {seq})")
        encoded = _encode(
            org_id,
            row["at"],
            row["actor_kind"],
            row["actor_id"],
            row["action"],
            row["object_kind"],
            row["object_id"],
            row["detail"],
            row["prev_hash"],
        )
        if encoded.hash_at(seq) != row["hash"]:
            original = _original_position(encoded, seq, row["hash"])
            if original is not None:
                why = f"entry {seq} was written as entry {original} (moved or renumbered)"
                return bad(ChainProblem.REORDERED, seq, why)
            return bad(ChainProblem.ALTERED, seq, f"entry {seq} does not match its hash")
        if row["prev_hash"] != prev:
            why = f"entry {seq} does not link to entry {seq - 1} (one of them was rewritten)"
            return bad(ChainProblem.ALTERED, seq, why)
        prev = row["hash"]
        expected += 1

    last = expected - 1
    if head_seq > last:
        why = f"the head names entry {head_seq} but the log ends at {last} (tail truncated)"
        return bad(ChainProblem.HEAD_MISMATCH, last + 1, why)
    if head_seq < last:
        why = f"the log continues past the head (head {head_seq}, log ends at {last})"
        return bad(ChainProblem.HEAD_MISMATCH, head_seq + 1, why)
    if head_hash != prev:
        return bad(ChainProblem.HEAD_MISMATCH, last, f"the head's hash differs from entry {last}")
    return OrgVerification(org_id=org_id, entries_checked=last, head_seq=head_seq)


def _original_position(encoded: _Encoded, seq: int, stored: bytes) -> int | None:
    for candidate in range(max(1, seq - _REORDER_WINDOW), seq + _REORDER_WINDOW + 1):
        if candidate != seq and encoded.hash_at(candidate) == stored:
            return candidate
    return None
