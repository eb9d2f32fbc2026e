"""The change feed devices pull from: writing changes, publishing the taxonomy, serving pages.

Each record has one row per audience; rewriting it takes a new ``change_no`` and the writing
transaction's id. A page and the transaction horizon are read in one REPEATABLE READ snapshot, and
``sync.cursor`` picks the rows so that a change committed late is never skipped. Pages carry the
stored JSON bodies as they are (``sync.codec.StoredChanges``), not decoded and encoded again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from cases.reports import DeclaredAttachment
from cases.taxonomy import Taxonomy
from storage.db import Conn
from storage.queries import Q
from sync.changes import (
    Change,
    RecordKind,
    ReportStatusChange,
    TaxonomyChange,
    Tombstone,
    TombstoneReason,
)
from sync.codec import StoredChanges, StoredPullResponse
from sync.cursor import (
    CursorState,
    PruneMark,
    PullStart,
    Scope,
    encode_cursor,
    pull_window,
    scope_fingerprint,
    select_changes,
    start_pull,
)
from sync.messages import PullRequest

__all__ = [
    "FeedRow",
    "ReportPublish",
    "audiences_for",
    "monitor_audience",
    "note_pull",
    "publish_report_state",
    "publish_report_states",
    "publish_report_status",
    "publish_report_tombstone",
    "publish_taxonomy",
    "read_pull_page",
]

_ENCODER = msgspec.json.Encoder()
ALL = "all"


def monitor_audience(monitor_id: uuid.UUID) -> str:
    return f"monitor:{monitor_id}"


def audiences_for(monitor_id: uuid.UUID, regions: Iterable[str]) -> list[str]:
    """What a monitor's device may see within its organisation."""
    return [ALL, monitor_audience(monitor_id), "org", *(f"region:{r}" for r in sorted(regions))]


class FeedRow(msgspec.Struct, frozen=True):
    change_no: int
    xid: int
    body: str


async def _upsert(
    conn: Conn,
    org_id: uuid.UUID | None,
    audience: str,
    kind: RecordKind,
    record_id: str,
    version: int,
    change: Change,
) -> None:
    await conn.execute(
        Q.upsert_feed_change,
        org_id,
        audience,
        kind.value,
        record_id,
        version,
        _ENCODER.encode(change).decode(),
    )


async def publish_report_status(
    conn: Conn,
    *,
    org_id: uuid.UUID,
    monitor_id: uuid.UUID,
    report_id: uuid.UUID,
    version: int,
    report_version: int,
    status: str,
    missing_attachments: tuple[str, ...] = (),
    open_conflicts: tuple[str, ...] = (),
    message: str | None = None,
) -> None:
    change = ReportStatusChange(
        version=version,
        report_version=report_version,
        changed_at=dt.datetime.now(dt.UTC),
        report_id=report_id,
        status=status,
        missing_attachments=missing_attachments,
        open_conflicts=open_conflicts,
        message=message,
    )
    await _upsert(
        conn,
        org_id,
        monitor_audience(monitor_id),
        RecordKind.REPORT,
        str(report_id),
        version,
        change,
    )


async def publish_report_state(
    conn: Conn,
    org_id: uuid.UUID,
    monitor_id: uuid.UUID,
    report_id: uuid.UUID,
    attachments: Iterable[DeclaredAttachment],
    status: str = "received",
) -> None:
    """Tell the monitor's devices where a report stands: version, missing media, conflicts."""
    bumped = await conn.fetchrow(Q.bump_status_version, report_id)
    assert bumped is not None
    declared = [a.sha256 for a in attachments]
    settled = {
        r["sha256"] for r in await conn.fetch(Q.settled_attachments, org_id, declared, report_id)
    }
    missing = tuple(dict.fromkeys(s for s in declared if s not in settled))
    open_conflicts = tuple(r["field"] for r in await conn.fetch(Q.open_conflict_fields, report_id))
    await publish_report_status(
        conn,
        org_id=org_id,
        monitor_id=monitor_id,
        report_id=report_id,
        version=bumped["status_version"],
        report_version=bumped["version"],
        status=status,
        missing_attachments=missing,
        open_conflicts=open_conflicts,
    )


async def publish_report_tombstone(
    conn: Conn, *, org_id: uuid.UUID, monitor_id: uuid.UUID, report_id: uuid.UUID
) -> None:
    bumped = await conn.fetchrow(Q.bump_status_version, report_id)
    assert bumped is not None
    version: int = bumped["status_version"]
    change = Tombstone(
        version=version,
        changed_at=dt.datetime.now(dt.UTC),
        record_kind=RecordKind.REPORT,
        record_id=str(report_id),
        reason=TombstoneReason.DELETED,
    )
    await _upsert(
        conn,
        org_id,
        monitor_audience(monitor_id),
        RecordKind.REPORT,
        str(report_id),
        version,
        change,
    )


class ReportPublish(msgspec.Struct, frozen=True):
    """What a batch of report edits tells the monitor's devices about one report: ``bumps`` is
    how many times the one-by-one path would have published it; ``attachments`` is None for a
    withdrawn report (a tombstone), else the declared attachments of its last version."""

    report_id: uuid.UUID
    bumps: int
    attachments: tuple[DeclaredAttachment, ...] | None


async def publish_report_states(
    conn: Conn, org_id: uuid.UUID, monitor_id: uuid.UUID, reports: Sequence[ReportPublish]
) -> None:
    """publish_report_state (or publish_report_tombstone) for several reports at once, each with
    its last state: the same status versions and bodies as one call per edit, in four round
    trips."""
    if not reports:
        return
    bumped = {
        r["id"]: r
        for r in await conn.fetch(
            Q.bump_status_versions, [p.report_id for p in reports], [p.bumps for p in reports]
        )
    }
    declared = sorted({a.sha256 for p in reports for a in p.attachments or ()})
    live = [p.report_id for p in reports if p.attachments is not None]
    arrived: set[str] = set()
    erased: dict[uuid.UUID, set[str]] = {}
    open_fields: dict[uuid.UUID, list[str]] = {}
    if live:
        for r in await conn.fetch(Q.settled_attachments_of_reports, org_id, declared, live):
            if r["report_id"] is None:
                arrived.add(r["sha256"])
            else:
                erased.setdefault(r["report_id"], set()).add(r["sha256"])
        for r in await conn.fetch(Q.open_conflict_fields_of_reports, live):
            open_fields.setdefault(r["report_id"], []).append(r["field"])
    audience = monitor_audience(monitor_id)
    rows = []
    for p in reports:
        row = bumped[p.report_id]
        version: int = row["status_version"]
        change: Change
        if p.attachments is None:
            change = Tombstone(
                version=version,
                changed_at=dt.datetime.now(dt.UTC),
                record_kind=RecordKind.REPORT,
                record_id=str(p.report_id),
                reason=TombstoneReason.DELETED,
            )
        else:
            settled = arrived | erased.get(p.report_id, set())
            change = ReportStatusChange(
                version=version,
                report_version=row["version"],
                changed_at=dt.datetime.now(dt.UTC),
                report_id=p.report_id,
                status="received",
                missing_attachments=tuple(
                    dict.fromkeys(a.sha256 for a in p.attachments if a.sha256 not in settled)
                ),
                open_conflicts=tuple(open_fields.get(p.report_id, ())),
            )
        rows.append(
            (
                org_id,
                audience,
                RecordKind.REPORT.value,
                str(p.report_id),
                version,
                _ENCODER.encode(change).decode(),
            )
        )
    await conn.executemany(Q.upsert_feed_change, rows)


async def publish_taxonomy(conn: Conn, taxonomy: Taxonomy, *, force: bool = False) -> bool:
    """Put the taxonomy in the feed for every device, once per content hash. True if it did."""
    async with conn.transaction():
        state = await conn.fetchrow(Q.lock_feed_state)
        assert state is not None
        if state["taxonomy_hash"] == taxonomy.content_hash and not force:
            return False
        now = dt.datetime.now(dt.UTC)
        for category in taxonomy.categories:
            change = TaxonomyChange(
                version=taxonomy.version,
                changed_at=now,
                code=category.code,
                labels=dict(msgspec.structs.asdict(category.labels)),
                taxonomy_version=str(taxonomy.version),
                retired=category.retired,
            )
            await _upsert(
                conn, None, ALL, RecordKind.TAXONOMY, category.code, taxonomy.version, change
            )
        await conn.execute(Q.set_taxonomy_hash, taxonomy.content_hash)
    return True


async def read_pull_page(
    conn: Conn,
    *,
    org_id: uuid.UUID,
    monitor_id: uuid.UUID,
    regions: Iterable[str],
    request: PullRequest,
    cursor_key: bytes,
) -> StoredPullResponse:
    """The next page for a device, its changes as stored. Never skips a change, even one committed
    after a later one."""
    region_set = frozenset(regions)
    scope = scope_fingerprint(Scope(monitor_id=monitor_id, role="monitor", regions=region_set))
    # Distinct audiences: the page query reads each one once.
    audiences = audiences_for(monitor_id, region_set)
    now = dt.datetime.now(dt.UTC)
    # One snapshot for the horizon and the rows: the cursor rule depends on it.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await conn.fetchrow(Q.feed_snapshot)
        assert snapshot is not None
        started = start_pull(
            request.cursor,
            cursor_key,
            scope=scope,
            epoch=snapshot["epoch"],
            pruned=PruneMark(change_no=snapshot["pruned_change"], xid=snapshot["pruned_xid"]),
        )
        if not isinstance(started, PullStart):
            return StoredPullResponse(
                reset_required=True, reset_reason=started.reason, server_time=now
            )
        state: CursorState = started.state
        xmin: int = snapshot["snapshot_xmin"]
        window = pull_window(state, xmin)
        rows: list[Any] = []
        if not window.stale:
            # Up to limit + 1 rows from each part; select_changes merges them and cuts the page.
            rows += await conn.fetch(
                Q.feed_newer,
                org_id,
                audiences,
                str(window.target),
                window.after,
                request.limit + 1,
            )
            # The band is empty unless the horizon moved and the cursor has delivered rows.
            if window.target > window.horizon and window.after > window.band_after:
                await conn.execute(Q.allow_sort)
                rows += await conn.fetch(
                    Q.feed_band,
                    org_id,
                    audiences,
                    str(window.target),
                    window.after,
                    str(window.horizon),
                    window.band_after,
                    request.limit + 1,
                )
    candidates = [FeedRow(r["change_no"], r["xid"], r["body"]) for r in rows]
    page = select_changes(state, candidates, snapshot_xmin=xmin, limit=request.limit)
    return StoredPullResponse(
        changes=StoredChanges(row.body for row in page.rows),
        has_more=page.has_more,
        next_cursor=encode_cursor(page.next_state, cursor_key),
        server_time=now,
    )


async def note_pull(conn: Conn, device_id: uuid.UUID) -> None:
    """Record that the device pulled (observability), without waiting for a WAL flush."""
    await conn.execute(Q.note_device_pull, device_id)
