"""Erasing the attachments of redacted reports, on PostgreSQL and each blob store backend.

Reports are written straight into the tables and redacted with the statement the retention job
uses (the whole job, from a closed case on, is tested in tests/api/test_retention.py); uploads
and erasures go through storage/attachments.py. The races are played out on two connections,
with the blob store paused at the dangerous point and the other side observed waiting for the
hash lock (a bucket of hashes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
import msgspec
import pytest

from cases.reports import DeclaredAttachment, Location, Report
from storage.attachments import (
    AttachmentRefused,
    erase_pending_attachments,
    receive_part,
    start_or_resume_upload,
    upload_status_for,
)
from storage.blobs import BlobStore
from storage.db import Conn, one_connection
from storage.devices import DeviceAuth
from storage.keyring import Keyring, MasterKey, MasterKeys
from storage.push import execute_push
from storage.queries import Q
from sync.attachments import UploadRequest, UploadStatus
from sync.codec import WireFormat, decode_push
from sync.messages import CreateReport, MutationStatus, PushRequest
from tests.conftest import truncate_all
from tests.integration.conftest import Backend

pytestmark = pytest.mark.db

NOW = dt.datetime.now(dt.UTC)
PHOTO = secrets.token_bytes(3000)
AUDIO = secrets.token_bytes(5000)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Org:
    id: uuid.UUID
    device: DeviceAuth


async def new_org(conn: Conn) -> Org:
    org = await conn.fetchval(
        "INSERT INTO orgs (slug, name) VALUES ($1, 'Org') RETURNING id", f"e-{uuid.uuid4().hex}"
    )
    monitor = await conn.fetchval(
        "INSERT INTO monitors (org_id, display_name) VALUES ($1, 'M') RETURNING id", org
    )
    device = await conn.fetchval(
        "INSERT INTO devices (org_id, monitor_id, credential_hash) VALUES ($1, $2, $3)"
        " RETURNING id",
        org,
        monitor,
        secrets.token_bytes(32),
    )
    auth = DeviceAuth(
        id=device,
        org_id=org,
        monitor_id=monitor,
        enrolled_at=NOW,
        revoked_at=None,
        revoked_reason=None,
        region_cells=[],
        region_countries=[],
        monitor_active=True,
    )
    return Org(org, auth)


async def new_report(conn: Conn, org: Org, *files: bytes) -> uuid.UUID:
    """A report declaring ``files`` as attachments, as the push path stores it."""
    attachments = tuple(
        DeclaredAttachment(sha256=sha(f), size_bytes=len(f), media_type="image/jpeg") for f in files
    )
    report = Report(
        id=uuid.uuid4(),
        occurred_at=NOW,
        location=Location(lat=27.7, lon=85.3),
        categories=("FL.DOC_RETENTION",),
        severity=3,
        attachments=attachments,
    )
    await conn.execute(
        "INSERT INTO reports (id, org_id, monitor_id, device_id, version, content, occurred_at,"
        " latitude, longitude, categories, recorded_at, received_at)"
        " VALUES ($1, $2, $3, $4, 1, $5::jsonb, $6, 27.7, 85.3, $7, $6, $6)",
        report.id,
        org.id,
        org.device.monitor_id,
        org.device.id,
        msgspec.json.encode(report).decode(),
        NOW,
        list(report.categories),
    )
    for a in attachments:
        await conn.execute(
            "INSERT INTO report_attachments (report_id, org_id, sha256, size_bytes, media_type)"
            " VALUES ($1, $2, $3, $4, $5)",
            report.id,
            org.id,
            a.sha256,
            a.size_bytes,
            a.media_type,
        )
    return report.id


async def redact(pool: asyncpg.Pool, org: Org, report_id: uuid.UUID) -> None:
    """What redact_due_reports does to a report's attachments, committed."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q.redact_report, org.id, report_id)
        await conn.fetchval(Q.erase_report_attachments, org.id, report_id)


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def start(conn: Conn, store: BlobStore, org: Org, data: bytes) -> UploadStatus:
    request = UploadRequest(sha256=sha(data), size_bytes=len(data), media_type="image/jpeg")
    return await start_or_resume_upload(conn, store, org.device, request)


async def upload(conn: Conn, store: BlobStore, org: Org, data: bytes) -> UploadStatus:
    """A whole upload of a small file (one part on both backends)."""
    status = await start(conn, store, org, data)
    assert status.missing == (0,), status
    return await receive_part(
        one_connection(conn), store, org.device, sha(data), 0, one_chunk(data)
    )


async def org_holds(conn: Conn, org: Org, data: bytes) -> bool:
    return await conn.fetchval(Q.blob_exists, org.id, sha(data)) is not None


async def attachment_view(conn: Conn, org: Org, report_id: uuid.UUID) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(Q.report_attachment_list, org.id, report_id)
    return [(r["sha256"], r["arrived"], r["erased"]) for r in rows]


async def erasure_audit(conn: Conn, org: Org) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT object_id, detail FROM audit_log"
        " WHERE org_id = $1 AND action = 'attachment.erase' ORDER BY seq",
        org.id,
    )
    return [(r["object_id"], msgspec.json.decode(r["detail"])["outcome"]) for r in rows]


async def pending(conn: Conn) -> list[tuple[Any, ...]]:
    rows = await conn.fetch("SELECT org_id, sha256 FROM blob_erasures ORDER BY org_id, sha256")
    return [tuple(r) for r in rows]


class PausedStore:
    """Wraps a blob store; ``method`` stops on entry until ``release`` is set (or, with
    ``crash_after``, does its work and then fails as a process dying right after would)."""

    def __init__(self, inner: BlobStore, method: str, *, crash_after: bool = False) -> None:
        self._inner = inner
        self._method = method
        self._crash_after = crash_after
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        if crash_after:
            self.release.set()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name != self._method:
            return found

        async def paused(*args: Any) -> Any:
            self.entered.set()
            await self.release.wait()
            result = await found(*args)
            if self._crash_after:
                raise RuntimeError("the worker died here")
            return result

        return paused

    def store(self) -> BlobStore:
        return cast(BlobStore, self)


async def until_waiting_for_a_lock(pool: asyncpg.Pool, task: asyncio.Task[Any]) -> None:
    """Return once a backend of this database waits for an advisory lock, or when ``task`` has
    ended without waiting (then the code under test took no lock; the assertions will tell)."""
    async with pool.acquire() as watcher:
        while not task.done():
            waiting = await watcher.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE d.datname = current_database() AND l.locktype = 'advisory'"
                " AND NOT l.granted"
            )
            if waiting:
                return
            await asyncio.sleep(0.005)  # polling for a state, not timing anything


@pytest.fixture
async def orgs(pool: asyncpg.Pool) -> AsyncIterator[tuple[Org, Org]]:
    """Two organisations, committed (the races need two connections); emptied afterwards."""
    async with pool.acquire() as conn:
        pair = (await new_org(conn), await new_org(conn))
    try:
        yield pair
    finally:
        await truncate_all(pool)


async def test_redacted_reports_blob_is_deleted_and_its_attachment_reads_erased(
    pool: asyncpg.Pool, blob_backend: Backend, orgs: tuple[Org, Org]
) -> None:
    store = blob_backend.store
    a, _ = orgs
    async with pool.acquire() as conn:
        report = await new_report(conn, a, PHOTO, AUDIO)
        assert (await upload(conn, store, a, PHOTO)).complete
        assert await store.exists(sha(PHOTO))
        await redact(pool, a, report)
        # Committed but not carried out yet: the bytes are still there, the erasure is queued.
        assert await store.exists(sha(PHOTO))
        assert await pending(conn) == sorted([(a.id, sha(PHOTO)), (a.id, sha(AUDIO))])

        assert await erase_pending_attachments(conn, store) == 2

        assert not await store.exists(sha(PHOTO))
        assert blob_backend.blob_names() == []
        assert not await org_holds(conn, a, PHOTO)
        assert await pending(conn) == []
        assert sorted(await attachment_view(conn, a, report)) == sorted(
            [(sha(PHOTO), False, True), (sha(AUDIO), False, True)]
        )
        assert sorted(await erasure_audit(conn, a)) == sorted(
            [(sha(PHOTO), "erased"), (sha(AUDIO), "erased")]
        )
        assert await erase_pending_attachments(conn, store) == 0  # nothing left to do


async def test_a_hash_another_live_report_declares_is_kept(
    pool: asyncpg.Pool, blob_backend: Backend, orgs: tuple[Org, Org]
) -> None:
    store = blob_backend.store
    a, b = orgs
    async with pool.acquire() as conn:
        redacted = await new_report(conn, a, PHOTO)
        live_same_org = await new_report(conn, a, PHOTO)
        live_other_org = await new_report(conn, b, PHOTO)
        await upload(conn, store, a, PHOTO)
        await upload(conn, store, b, PHOTO)  # each organisation delivers its own copy

        await redact(pool, a, redacted)
        assert await erase_pending_attachments(conn, store) == 1
        # A live report of the same organisation still needs it: nothing goes.
        assert await store.exists(sha(PHOTO))
        assert await org_holds(conn, a, PHOTO)
        assert await attachment_view(conn, a, live_same_org) == [(sha(PHOTO), True, False)]
        assert await attachment_view(conn, a, redacted) == [(sha(PHOTO), False, True)]
        assert await erasure_audit(conn, a) == [(sha(PHOTO), "kept_for_live_report")]

        await redact(pool, a, live_same_org)
        assert await erase_pending_attachments(conn, store) == 1
        # The organisation's copy is gone; the bytes stay for the other organisation's report.
        assert not await org_holds(conn, a, PHOTO)
        assert await store.exists(sha(PHOTO))
        assert await attachment_view(conn, b, live_other_org) == [(sha(PHOTO), True, False)]
        # Org A's audit does not learn that another organisation holds the same file.
        assert (await erasure_audit(conn, a))[-1] == (sha(PHOTO), "erased")

        await redact(pool, b, live_other_org)
        assert await erase_pending_attachments(conn, store) == 1
        assert not await store.exists(sha(PHOTO))


async def test_an_erased_hash_is_refused_for_the_redacted_report_but_not_for_a_live_one(
    pool: asyncpg.Pool, blob_backend: Backend, orgs: tuple[Org, Org]
) -> None:
    store = blob_backend.store
    a, b = orgs
    async with pool.acquire() as conn:
        report = await new_report(conn, a, PHOTO)
        await upload(conn, store, a, PHOTO)
        await redact(pool, a, report)
        await erase_pending_attachments(conn, store)

        for attempt in (
            start(conn, store, a, PHOTO),
            upload_status_for(conn, store, a.device, sha(PHOTO)),
            receive_part(one_connection(conn), store, a.device, sha(PHOTO), 0, one_chunk(PHOTO)),
        ):
            with pytest.raises(AttachmentRefused) as refused:
                await attempt
            assert (refused.value.status, refused.value.reason) == (410, "attachment_erased")
        assert not await store.exists(sha(PHOTO))

        # Another organisation's live report with the same photo uploads it as usual.
        other = await new_report(conn, b, PHOTO)
        assert (await upload(conn, store, b, PHOTO)).complete
        assert await store.exists(sha(PHOTO))
        assert await attachment_view(conn, b, other) == [(sha(PHOTO), True, False)]
        # So does a new live report of the same organisation; the redacted one stays erased.
        again = await new_report(conn, a, PHOTO)
        assert (await upload(conn, store, a, PHOTO)).complete
        assert await attachment_view(conn, a, again) == [(sha(PHOTO), True, False)]
        assert await attachment_view(conn, a, report) == [(sha(PHOTO), False, True)]


async def test_an_upload_under_way_when_the_report_is_redacted_keeps_nothing(
    pool: asyncpg.Pool, blob_backend: Backend, orgs: tuple[Org, Org]
) -> None:
    store = blob_backend.store
    a, _ = orgs
    async with pool.acquire() as conn:
        first = await new_report(conn, a, PHOTO)
        second = await new_report(conn, a, AUDIO)
        assert (await start(conn, store, a, PHOTO)).missing == (0,)
        assert (await start(conn, store, a, AUDIO)).missing == (0,)

        # The last part is being written when the redaction commits: the finish (under the hash
        # lock) refuses it and keeps nothing.
        paused = PausedStore(store, "put_part")
        last_part = asyncio.create_task(
            receive_part(
                one_connection(conn), paused.store(), a.device, sha(PHOTO), 0, one_chunk(PHOTO)
            )
        )
        await paused.entered.wait()
        await redact(pool, a, first)
        paused.release.set()
        with pytest.raises(AttachmentRefused) as refused:
            await last_part
        assert (refused.value.status, refused.value.reason) == (410, "attachment_erased")
        assert not await store.exists(sha(PHOTO))
        assert await conn.fetchval(Q.get_upload, a.id, sha(PHOTO)) is None

        # Parts arriving after the redaction are refused at once; the erasure then discards the
        # upload and what it had received.
        await redact(pool, a, second)
        with pytest.raises(AttachmentRefused) as refused:
            await receive_part(
                one_connection(conn), store, a.device, sha(AUDIO), 0, one_chunk(AUDIO)
            )
        assert refused.value.status == 410
        assert await conn.fetchval(Q.get_upload, a.id, sha(AUDIO)) is not None
        assert await erase_pending_attachments(conn, store) == 2
        assert await conn.fetchval(Q.get_upload, a.id, sha(AUDIO)) is None
        assert blob_backend.contents() == []


async def erasing_while_another_org_uploads(
    pool: asyncpg.Pool, store: BlobStore, a: Org, b: Org
) -> uuid.UUID:
    """Org a's report with the photo is redacted (its erasure queued) while org b's report
    declaring the same photo has started its upload; returns b's report."""
    async with pool.acquire() as conn:
        redacted = await new_report(conn, a, PHOTO)
        live = await new_report(conn, b, PHOTO)
        await upload(conn, store, a, PHOTO)
        assert (await start(conn, store, b, PHOTO)).missing == (0,)
    await redact(pool, a, redacted)
    return live


async def test_an_upload_finishing_while_the_erasure_deletes_stores_the_bytes_again(
    pool: asyncpg.Pool, blob_backend: Backend, orgs: tuple[Org, Org]
) -> None:
    """The erasure has decided nothing needs the bytes and is about to delete them; another
    organisation's upload of the same file finishes now. Without the lock, `complete` would find
    the old bytes, keep no copy of its own, and lose them to the delete a moment later."""
    store = blob_backend.store
    a, b = orgs
    live = await erasing_while_another_org_uploads(pool, store, a, b)

    paused = PausedStore(store, "delete")
    async with pool.acquire() as erasing, pool.acquire() as uploading:
        erasure = asyncio.create_task(erase_pending_attachments(erasing, paused.store()))
        await paused.entered.wait()
        finish = asyncio.create_task(
            receive_part(
                one_connection(uploading), store, b.device, sha(PHOTO), 0, one_chunk(PHOTO)
            )
        )
        await until_waiting_for_a_lock(pool, finish)
        upload_waited = not finish.done()
        paused.release.set()
        assert await erasure == 1
        assert (await finish).complete

    assert await store.exists(sha(PHOTO))
    assert upload_waited  # for the erasure to end, then stored the bytes again
    async with pool.acquire() as conn:
        assert await attachment_view(conn, b, live) == [(sha(PHOTO), True, False)]
        assert not await org_holds(conn, a, PHOTO)
    async with await store.open(sha(PHOTO)) as stream:
        assert b"".join([chunk async for chunk in stream]) == PHOTO


async def test_an_erasure_arriving_while_an_upload_finishes_keeps_the_bytes(
    pool: asyncpg.Pool, blob_backend: Backend, orgs: tuple[Org, Org]
) -> None:
    store = blob_backend.store
    a, b = orgs
    live = await erasing_while_another_org_uploads(pool, store, a, b)

    paused = PausedStore(store, "complete")
    async with pool.acquire() as erasing, pool.acquire() as uploading:
        finish = asyncio.create_task(
            receive_part(
                one_connection(uploading), paused.store(), b.device, sha(PHOTO), 0, one_chunk(PHOTO)
            )
        )
        await paused.entered.wait()
        erasure = asyncio.create_task(erase_pending_attachments(erasing, store))
        await until_waiting_for_a_lock(pool, erasure)
        erasure_waited = not erasure.done()
        paused.release.set()
        assert (await finish).complete
        assert await erasure == 1

    assert await store.exists(sha(PHOTO))
    assert erasure_waited  # for the upload to record its copy, then kept the bytes
    async with pool.acquire() as conn:
        assert await attachment_view(conn, b, live) == [(sha(PHOTO), True, False)]
        assert not await org_holds(conn, a, PHOTO)


async def test_a_crash_after_deleting_the_bytes_is_finished_by_the_next_run(
    pool: asyncpg.Pool, blob_backend: Backend, orgs: tuple[Org, Org]
) -> None:
    store = blob_backend.store
    a, _ = orgs
    async with pool.acquire() as conn:
        report = await new_report(conn, a, PHOTO)
        await upload(conn, store, a, PHOTO)
        await redact(pool, a, report)

        crashing = PausedStore(store, "delete", crash_after=True)
        with pytest.raises(RuntimeError):
            await erase_pending_attachments(conn, crashing.store())
        # The bytes are gone but the transaction rolled back: still queued, nothing audited.
        assert not await store.exists(sha(PHOTO))
        assert await pending(conn) == [(a.id, sha(PHOTO))]
        assert await erasure_audit(conn, a) == []

        assert await erase_pending_attachments(conn, store) == 1
        assert await pending(conn) == []
        assert not await org_holds(conn, a, PHOTO)
        assert await erasure_audit(conn, a) == [(sha(PHOTO), "erased")]
        assert await erase_pending_attachments(conn, store) == 0
        assert await erasure_audit(conn, a) == [(sha(PHOTO), "erased")]


async def test_a_legal_hold_set_after_the_redaction_keeps_the_bytes_until_it_is_lifted(
    pool: asyncpg.Pool, blob_backend: Backend, orgs: tuple[Org, Org]
) -> None:
    store = blob_backend.store
    a, _ = orgs
    async with pool.acquire() as conn:
        report = await new_report(conn, a, PHOTO)
        await upload(conn, store, a, PHOTO)
        await redact(pool, a, report)
        await conn.execute(
            "INSERT INTO retention_settings (org_id, redact_after_days, legal_hold)"
            " VALUES ($1, 30, true)",
            a.id,
        )
        assert await erase_pending_attachments(conn, store) == 0
        assert await store.exists(sha(PHOTO))
        assert await pending(conn) == [(a.id, sha(PHOTO))]

        await conn.execute(
            "UPDATE retention_settings SET legal_hold = false WHERE org_id = $1", a.id
        )
        assert await erase_pending_attachments(conn, store) == 1
        assert not await store.exists(sha(PHOTO))


async def test_a_push_declaring_a_hash_waits_for_its_erasure(
    pool: asyncpg.Pool, blob_backend: Backend, orgs: tuple[Org, Org]
) -> None:
    """Retention has decided that no live report needs a file and is deleting it; the monitor
    pushes a new report declaring the same file. Without the hash lock the push would still
    see the organisation's copy, tell the phone the file arrived (so the phone may drop it), and
    lose the bytes a moment later. With it, the push waits, then says the file is missing."""
    store = blob_backend.store
    a, _ = orgs
    async with pool.acquire() as conn:
        redacted = await new_report(conn, a, PHOTO)
        assert (await upload(conn, store, a, PHOTO)).complete
    await redact(pool, a, redacted)
    photo = DeclaredAttachment(sha256=sha(PHOTO), size_bytes=len(PHOTO), media_type="image/jpeg")
    fresh = Report(
        id=uuid.uuid4(),
        occurred_at=NOW,
        location=Location(lat=27.7, lon=85.3),
        categories=("FL.DOC_RETENTION",),
        severity=3,
        attachments=(photo,),
    )
    mutation = CreateReport(seq=1, mutation_id=uuid.uuid4(), recorded_at=NOW, report=fresh)
    body = msgspec.json.encode(
        PushRequest(
            device_id=a.device.id,
            sent_at=NOW,
            mutations=(msgspec.Raw(msgspec.json.encode(mutation)),),
        )
    )
    keyring = Keyring(MasterKeys(MasterKey(secrets.token_bytes(32))))

    paused = PausedStore(store, "delete")
    async with pool.acquire() as erasing, pool.acquire() as pushing:
        erasure = asyncio.create_task(erase_pending_attachments(erasing, paused.store()))
        await paused.entered.wait()  # decided that nothing live needs it; the delete is next
        push = asyncio.create_task(
            execute_push(
                pushing,
                a.device,
                decode_push(body, WireFormat.JSON),
                WireFormat.JSON,
                keyring=keyring,
                known_categories=frozenset(fresh.categories),
                received_at=NOW,
            )
        )
        await until_waiting_for_a_lock(pool, push)
        push_waited = not push.done()
        paused.release.set()
        assert await erasure == 1
        [result] = (await push).results

    assert result.status is MutationStatus.APPLIED, result
    assert push_waited
    assert not await store.exists(sha(PHOTO))
    async with pool.acquire() as conn:
        status = await conn.fetchval(
            "SELECT body FROM sync_changes WHERE org_id = $1 AND record_kind = 'report'"
            " AND record_id = $2",
            a.id,
            str(fresh.id),
        )
        assert msgspec.json.decode(status)["missing_attachments"] == [sha(PHOTO)]
        # The report is live: the phone may send the file again, and it arrives.
        assert (await upload(conn, store, a, PHOTO)).complete
    assert await store.exists(sha(PHOTO))
