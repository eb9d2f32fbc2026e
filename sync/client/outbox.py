"""The device's local store, like a phone's: a SQLite file holding the outbox of mutations, the
device's own report copies, pulled records with the cursor, and attachment upload progress.

Every change to it is one SQLite transaction, so a process killed at any point reopens the file to
a consistent state: a mutation and its seq are written together (a seq is never handed out twice,
even across restarts), and a pulled page is written together with the cursor that follows it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar
from uuid import UUID

import msgspec

from cases.reports import Report
from sync.changes import (
    Change,
    EntityChange,
    ReportStatusChange,
    TaskChange,
    TaxonomyChange,
    Tombstone,
)
from sync.messages import (
    AmendReport,
    AnswerTask,
    CreateReport,
    DeleteReport,
    EnrollResponse,
    Mutation,
    MutationResult,
    MutationStatus,
    ReasonCode,
)

__all__ = [
    "FINAL_STATUSES",
    "Identity",
    "LocalReport",
    "Outbox",
    "PageSummary",
    "PendingMutation",
    "is_final",
]

# ``held`` and a ``seq_gap`` rejection are the only answers that leave a mutation in the outbox.
FINAL_STATUSES: Final = frozenset(
    {MutationStatus.APPLIED, MutationStatus.DUPLICATE, MutationStatus.CONFLICT}
)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mutations (
    seq INTEGER PRIMARY KEY, mutation_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    record_id TEXT, body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_status TEXT, last_reason TEXT);
CREATE TABLE IF NOT EXISTS results (
    mutation_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, kind TEXT NOT NULL, record_id TEXT,
    status TEXT NOT NULL, reason TEXT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY, body BLOB NOT NULL, server_version INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS pulled (
    record_kind TEXT NOT NULL, record_id TEXT NOT NULL, version INTEGER NOT NULL, body BLOB,
    PRIMARY KEY (record_kind, record_id));
CREATE TABLE IF NOT EXISTS uploads (
    sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, size_bytes INTEGER NOT NULL,
    media_type TEXT NOT NULL, parts_sent INTEGER NOT NULL DEFAULT 0,
    complete INTEGER NOT NULL DEFAULT 0);
"""
_TABLES: Final = ("meta", "mutations", "results", "reports", "pulled", "uploads")
# The mutation types enqueue returns as it was given (a constrained TypeVar keeps the precise one).
M = TypeVar("M", CreateReport, AmendReport, DeleteReport, AnswerTask)
_JSON: Final = msgspec.json.Encoder()
_MUTATION: Final = msgspec.json.Decoder(Mutation)
_REPORT: Final = msgspec.json.Decoder(Report)
_RESULT: Final = msgspec.json.Decoder(MutationResult)
_CHANGE: Final = msgspec.json.Decoder(Change)


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """What enrollment gave this device (a real app keeps ``credential`` in the keystore)."""

    device_id: UUID
    credential: str
    monitor_id: UUID
    enrolled_at: dt.datetime
    max_batch: int
    max_pull_limit: int


class PendingMutation(msgspec.Struct, frozen=True, kw_only=True):
    """A mutation still in the outbox. ``body`` is its JSON as frozen at creation, resent as is."""

    seq: int
    mutation_id: UUID
    kind: str
    record_id: str | None
    body: bytes
    attempts: int
    last_status: str | None

    def mutation(self) -> Mutation:
        mutation: Mutation = _MUTATION.decode(self.body)
        return mutation


class LocalReport(msgspec.Struct, frozen=True, kw_only=True):
    """The device's copy of one of its reports; ``server_version`` is None until acknowledged."""

    report: Report
    server_version: int | None
    deleted: bool


class PageSummary(msgspec.Struct, frozen=True, kw_only=True):
    stored: int
    skipped: int
    removed: int


def _change_key(change: Change) -> tuple[str, str]:
    """The local record a change is about: the same key for a record and its tombstone."""
    if isinstance(change, ReportStatusChange):
        return "report", str(change.report_id)
    if isinstance(change, TaskChange):
        return "task", str(change.task_id)
    if isinstance(change, TaxonomyChange):
        return "taxonomy", change.code
    if isinstance(change, EntityChange):
        return "entity", str(change.entity_id)
    return str(change.record_kind), change.record_id


def is_final(result: MutationResult) -> bool:
    """Whether a result settles its mutation (everything but ``held`` and ``seq_gap``)."""
    if result.status is MutationStatus.REJECTED:
        return result.reason is not ReasonCode.SEQ_GAP
    return result.status in FINAL_STATUSES


class Outbox:
    """One device's local database. Not thread-safe: one device, one task, like one phone app."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path | str) -> Outbox:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so each operation is one unit.
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _set(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # Identity -----------------------------------------------------------------------------------

    def identity(self) -> Identity | None:
        raw = self._get("identity")
        return None if raw is None else msgspec.json.decode(raw, type=Identity)

    def save_identity(self, enrolled: EnrollResponse) -> Identity:
        identity = Identity(
            device_id=enrolled.device_id,
            credential=enrolled.credential,
            monitor_id=enrolled.monitor_id,
            enrolled_at=enrolled.enrolled_at,
            max_batch=enrolled.max_batch,
            max_pull_limit=enrolled.max_pull_limit,
        )
        with self._tx() as conn:
            if self._get("identity") is not None:
                raise RuntimeError("this outbox already belongs to an enrolled device")
            self._set(conn, "identity", _JSON.encode(identity).decode())
            # A new enrollment is a new device id, and seq restarts at 1 with it.
            self._set(conn, "next_seq", "1")
        return identity

    def wipe(self) -> None:
        """Erase everything, outbox and credential included (a revoked device's duty)."""
        with self._tx() as conn:
            for table in _TABLES:
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    def get_meta(self, key: str) -> str | None:
        return self._get(f"app.{key}")

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as conn:
            self._set(conn, f"app.{key}", value)

    # Outbox -------------------------------------------------------------------------------------

    def next_seq(self) -> int:
        return int(self._get("next_seq") or "1")

    def enqueue(self, make: Callable[[int], M]) -> M:
        """Assign the next seq, build the mutation with it and store it, with the local report copy,
        in one transaction. The seq counter only ever moves forward.

        The mutation is validated first (constraints apply on decode only), so a bad one is refused
        here, while the monitor can still fix it, instead of being rejected by the server later.
        """
        with self._tx() as conn:
            seq = self.next_seq()
            mutation = make(seq)
            if mutation.seq != seq:
                raise ValueError("the mutation must carry the seq it was given")
            body = _JSON.encode(mutation)
            _MUTATION.decode(body)  # raises msgspec.ValidationError
            record_id = _record_id(mutation)
            conn.execute(
                "INSERT INTO mutations (seq, mutation_id, kind, record_id, body)"
                " VALUES (?, ?, ?, ?, ?)",
                (seq, str(mutation.mutation_id), _kind(mutation), record_id, body),
            )
            self._set(conn, "next_seq", str(seq + 1))
            if isinstance(mutation, CreateReport):
                conn.execute(
                    "INSERT INTO reports (id, body) VALUES (?, ?)",
                    (record_id, _JSON.encode(mutation.report)),
                )
            elif isinstance(mutation, AmendReport):
                local = self.report(mutation.report_id)
                if local is not None:
                    updated = _apply_changes(local.report, mutation)
                    conn.execute(
                        "UPDATE reports SET body = ? WHERE id = ?",
                        (_JSON.encode(updated), record_id),
                    )
            elif isinstance(mutation, DeleteReport):
                conn.execute("UPDATE reports SET deleted = 1 WHERE id = ?", (record_id,))
        return mutation

    def pending(self, limit: int | None = None) -> list[PendingMutation]:
        """Pending mutations in seq order."""
        rows = self._conn.execute(
            "SELECT seq, mutation_id, kind, record_id, body, attempts, last_status"
            " FROM mutations ORDER BY seq LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        return [
            PendingMutation(
                seq=r[0],
                mutation_id=UUID(r[1]),
                kind=r[2],
                record_id=r[3],
                body=bytes(r[4]),
                attempts=r[5],
                last_status=r[6],
            )
            for r in rows
        ]

    def depth(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM mutations").fetchone()[0])

    def mark_attempt(self, seqs: Sequence[int]) -> None:
        with self._tx() as conn:
            conn.executemany(
                "UPDATE mutations SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs]
            )

    def record_results(self, results: Sequence[MutationResult]) -> int:
        """Store a push's answers: final ones leave the outbox for the results journal (and update
        the local report's known version); ``held``/``seq_gap`` stay. Returns how many were final.
        """
        final = 0
        with self._tx() as conn:
            for result in results:
                row = conn.execute(
                    "SELECT kind, record_id FROM mutations WHERE mutation_id = ?",
                    (str(result.mutation_id),),
                ).fetchone()
                if row is None:
                    continue  # already settled by an earlier answer: final results never change
                if not is_final(result):
                    conn.execute(
                        "UPDATE mutations SET last_status = ?, last_reason = ?"
                        " WHERE mutation_id = ?",
                        (result.status.value, result.reason, str(result.mutation_id)),
                    )
                    continue
                final += 1
                kind, record_id = row
                conn.execute(
                    "DELETE FROM mutations WHERE mutation_id = ?", (str(result.mutation_id),)
                )
                conn.execute(
                    "INSERT OR REPLACE INTO results"
                    " (mutation_id, seq, kind, record_id, status, reason, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        str(result.mutation_id),
                        result.seq,
                        kind,
                        record_id,
                        result.status.value,
                        result.reason,
                        _JSON.encode(result),
                    ),
                )
                if result.version is not None and kind in ("create_report", "amend_report"):
                    conn.execute(
                        "UPDATE reports SET server_version = max(coalesce(server_version, 0), ?)"
                        " WHERE id = ?",
                        (result.version, record_id),
                    )
        return final

    def results(self) -> list[MutationResult]:
        rows = self._conn.execute("SELECT body FROM results ORDER BY seq").fetchall()
        return [_RESULT.decode(r[0]) for r in rows]

    def result(self, mutation_id: UUID) -> MutationResult | None:
        row = self._conn.execute(
            "SELECT body FROM results WHERE mutation_id = ?", (str(mutation_id),)
        ).fetchone()
        return None if row is None else _RESULT.decode(row[0])

    # Local reports ------------------------------------------------------------------------------

    def report(self, report_id: UUID) -> LocalReport | None:
        row = self._conn.execute(
            "SELECT body, server_version, deleted FROM reports WHERE id = ?", (str(report_id),)
        ).fetchone()
        if row is None:
            return None
        return LocalReport(
            report=_REPORT.decode(row[0]), server_version=row[1], deleted=bool(row[2])
        )

    def report_ids(self) -> list[UUID]:
        return [UUID(r[0]) for r in self._conn.execute("SELECT id FROM reports ORDER BY id")]

    # Pull ---------------------------------------------------------------------------------------

    def cursor(self) -> str | None:
        return self._get("cursor")

    def apply_page(self, changes: Sequence[Change], next_cursor: str | None) -> PageSummary:
        """Store a pulled page and the cursor after it in one transaction. A change whose version
        is not newer than the local one is skipped (a page may arrive twice after a retry)."""
        stored = skipped = removed = 0
        with self._tx() as conn:
            for change in changes:
                kind, record_id = _change_key(change)
                row = conn.execute(
                    "SELECT version FROM pulled WHERE record_kind = ? AND record_id = ?",
                    (kind, record_id),
                ).fetchone()
                if row is not None and change.version <= row[0]:
                    skipped += 1
                    continue
                # A tombstone keeps its version (with no body) so an older copy cannot come back.
                body = None if isinstance(change, Tombstone) else _JSON.encode(change)
                conn.execute(
                    "INSERT OR REPLACE INTO pulled (record_kind, record_id, version, body)"
                    " VALUES (?, ?, ?, ?)",
                    (kind, record_id, change.version, body),
                )
                if isinstance(change, Tombstone):
                    removed += 1
                    if kind == "report":
                        conn.execute("DELETE FROM reports WHERE id = ?", (record_id,))
                else:
                    stored += 1
            if next_cursor is None:
                conn.execute("DELETE FROM meta WHERE key = 'cursor'")
            else:
                self._set(conn, "cursor", next_cursor)
        return PageSummary(stored=stored, skipped=skipped, removed=removed)

    def reset_pulled(self) -> None:
        """Drop every pulled record and the cursor; the outbox and own reports stay."""
        with self._tx() as conn:
            conn.execute("DELETE FROM pulled")
            conn.execute("DELETE FROM meta WHERE key = 'cursor'")

    def pulled(self, record_kind: str) -> list[Change]:
        """Live pulled records of one kind (tombstoned ones excluded)."""
        rows = self._conn.execute(
            "SELECT body FROM pulled WHERE record_kind = ? AND body IS NOT NULL ORDER BY record_id",
            (record_kind,),
        ).fetchall()
        return [_CHANGE.decode(r[0]) for r in rows]

    def pulled_record(self, record_kind: str, record_id: str) -> Change | None:
        """The live pulled copy of one record (None if absent or tombstoned)."""
        row = self._conn.execute(
            "SELECT body FROM pulled WHERE record_kind = ? AND record_id = ? AND body IS NOT NULL",
            (record_kind, record_id),
        ).fetchone()
        if row is None:
            return None
        change: Change = _CHANGE.decode(row[0])
        return change

    def pulled_version(self, record_kind: str, record_id: str) -> int | None:
        row = self._conn.execute(
            "SELECT version FROM pulled WHERE record_kind = ? AND record_id = ?",
            (record_kind, record_id),
        ).fetchone()
        return None if row is None else int(row[0])

    # Uploads ------------------------------------------------------------------------------------

    def add_upload(self, sha256: str, path: Path, size_bytes: int, media_type: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO uploads (sha256, path, size_bytes, media_type)"
                " VALUES (?, ?, ?, ?)",
                (sha256, str(path), size_bytes, media_type),
            )

    def pending_uploads(self) -> list[tuple[str, Path, int, str]]:
        rows = self._conn.execute(
            "SELECT sha256, path, size_bytes, media_type FROM uploads WHERE complete = 0"
            " ORDER BY sha256"
        ).fetchall()
        return [(r[0], Path(r[1]), r[2], r[3]) for r in rows]

    def record_upload(self, sha256: str, parts_sent: int, complete: bool) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE uploads SET parts_sent = parts_sent + ?, complete = ? WHERE sha256 = ?",
                (parts_sent, int(complete), sha256),
            )

    def uploads(self) -> dict[str, bool]:
        rows = self._conn.execute("SELECT sha256, complete FROM uploads").fetchall()
        return {r[0]: bool(r[1]) for r in rows}


def _kind(mutation: Mutation) -> str:
    tag: Any = type(mutation).__struct_config__.tag
    return str(tag)


def _record_id(mutation: Mutation) -> str | None:
    if isinstance(mutation, CreateReport):
        return str(mutation.report.id)
    if isinstance(mutation, AmendReport | DeleteReport):
        return str(mutation.report_id)
    return str(mutation.task_id)


def _apply_changes(report: Report, amend: AmendReport) -> Report:
    """The local copy after an amendment: every field the amendment sets (None clears)."""
    fields = msgspec.structs.asdict(amend.changes)
    changed = {k: v for k, v in fields.items() if v is not msgspec.UNSET}
    return msgspec.structs.replace(report, **changed)
