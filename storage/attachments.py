"""Resumable, content-addressed attachment uploads from devices, over the blob store, and the
erasure of attachments whose reports retention redacted.

An upload is tracked per organisation and hash. Parts go to the blob store as they come; when the
last one is in, the store verifies the whole blob's sha256 (a mismatch keeps nothing), the blob is
recorded as delivered for that organisation, and every report declaring it gets a fresh status.
Recording a blob and erasing one take the same hash lock (one of 1,024 buckets of hashes,
docs/decisions/0112-push-lock-order.md), so a blob a live report needs is never deleted
(docs/decisions/0105-blob-store.md, "Erasure"); the verification, which takes seconds for a large
file, runs before the finish takes it, so pushes sharing the bucket do not wait for it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable
from datetime import timedelta

import msgspec

from cases.reports import Report
from storage.audit import record_system
from storage.blobs import (
    BlobHashMismatch,
    BlobStore,
    BlobTooLarge,
    PartRejected,
    Upload,
    UploadIncomplete,
    UploadNotFound,
)
from storage.db import Acquire, Conn
from storage.devices import DeviceAuth
from storage.errors import StorageError
from storage.feed import publish_report_state
from storage.queries import Q
from sync.attachments import UploadRequest, UploadStatus

__all__ = [
    "AttachmentRefused",
    "DeclaredMedia",
    "declared_media",
    "erase_pending_attachments",
    "receive_part",
    "start_or_resume_upload",
    "upload_status_for",
]


_log = logging.getLogger("fairwatch.attachments")


def _expired() -> AttachmentRefused:
    return AttachmentRefused("upload_not_found", "the upload expired; start again", 404)


def _erased() -> AttachmentRefused:
    return AttachmentRefused(
        "attachment_erased",
        "this attachment belonged only to reports whose sensitive data was erased under the "
        "organisation's retention policy; it is not accepted again, delete the local copy",
        410,
    )


async def _refuse_if_erased(conn: Conn, org_id: uuid.UUID, sha256: str) -> None:
    if await conn.fetchval(Q.blob_erased_for_org, org_id, sha256):
        raise _erased()


class AttachmentRefused(StorageError):
    """The device asked for something that cannot be (wrong size, bad part, hash mismatch)."""

    def __init__(self, reason: str, detail: str, status: int = 422) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status


# Only used to describe a blob that is already complete, where no part will be sent.
_DEFAULT_PART_SIZE = 8 * 1024 * 1024


def _complete(sha256: str, size: int, part_size: int) -> UploadStatus:
    parts = max(1, -(-size // part_size))
    return UploadStatus(
        sha256=sha256, size_bytes=size, part_size=part_size, parts=parts, missing=(), complete=True
    )


PART_URL_LIFETIME = timedelta(hours=1)


async def _status(blobs: BlobStore, upload: Upload) -> UploadStatus:
    received = await blobs.list_parts(upload.upload_id)
    missing = tuple(n - 1 for n in upload.missing_parts(received))
    urls: dict[int, str] = {}
    for index in missing:
        url = await blobs.presign_part_url(upload.upload_id, index + 1, PART_URL_LIFETIME)
        if url is None:  # a store without direct uploads: parts go through the server
            break
        urls[index] = url
    return UploadStatus(
        sha256=upload.sha256,
        size_bytes=upload.size,
        part_size=upload.part_size,
        parts=upload.part_count,
        missing=missing,
        complete=False,
        part_urls=urls,
    )


async def _status_or_finish(
    conn: Conn, blobs: BlobStore, device: DeviceAuth, upload: Upload
) -> UploadStatus:
    """The status; when every part is in (sent through us or straight to S3), finish the blob."""
    status = await _status(blobs, upload)
    if status.missing:
        return status
    return await _finish(conn, blobs, device, upload.sha256)


async def start_or_resume_upload(
    conn: Conn, blobs: BlobStore, device: DeviceAuth, request: UploadRequest
) -> UploadStatus:
    await _refuse_if_erased(conn, device.org_id, request.sha256)
    delivered = await conn.fetchval(Q.blob_exists, device.org_id, request.sha256)
    if delivered is not None:
        return _complete(request.sha256, delivered, _DEFAULT_PART_SIZE)
    row = await conn.fetchrow(Q.get_upload, device.org_id, request.sha256)
    if row is not None:
        if row["size_bytes"] != request.size_bytes:
            raise AttachmentRefused(
                "size_mismatch",
                f"an upload of this sha256 is in progress with size {row['size_bytes']}",
                409,
            )
        try:
            upload = await blobs.get_upload(row["upload_id"])
        except UploadNotFound:
            await conn.execute(Q.delete_upload, device.org_id, request.sha256)
        else:
            return await _status_or_finish(conn, blobs, device, upload)
    try:
        upload = await blobs.start_upload(request.sha256, request.size_bytes)
    except BlobTooLarge as exc:
        raise AttachmentRefused("too_large", str(exc), 413) from None
    inserted = await conn.fetchval(
        Q.insert_upload,
        device.org_id,
        request.sha256,
        upload.upload_id,
        upload.size,
        upload.part_size,
        request.media_type,
        device.id,
    )
    if inserted is None:  # a concurrent request of the same org started one first: use it
        await blobs.abort(upload.upload_id)
        return await upload_status_for(conn, blobs, device, request.sha256)
    return await _status(blobs, upload)


async def upload_status_for(
    conn: Conn, blobs: BlobStore, device: DeviceAuth, sha256: str
) -> UploadStatus:
    await _refuse_if_erased(conn, device.org_id, sha256)
    delivered = await conn.fetchval(Q.blob_exists, device.org_id, sha256)
    if delivered is not None:
        return _complete(sha256, delivered, _DEFAULT_PART_SIZE)
    row = await conn.fetchrow(Q.get_upload, device.org_id, sha256)
    if row is None:
        raise AttachmentRefused("upload_not_found", "start the upload first", 404)
    try:
        upload = await blobs.get_upload(row["upload_id"])
    except UploadNotFound:
        await conn.execute(Q.delete_upload, device.org_id, sha256)
        raise _expired() from None
    return await _status_or_finish(conn, blobs, device, upload)


async def receive_part(
    acquire: Acquire,
    blobs: BlobStore,
    device: DeviceAuth,
    sha256: str,
    index: int,
    stream: AsyncIterable[bytes],
) -> UploadStatus:
    """Store part ``index`` as it streams in; the upload's status, finished if it was the last.

    No database connection is held while the bytes arrive: a phone on a slow network may take
    minutes over one part, and a few such uploads holding pooled connections would stall every
    other request. One is taken to find the upload, and another afterwards."""
    async with acquire() as conn:
        await _refuse_if_erased(conn, device.org_id, sha256)
        row = await conn.fetchrow(Q.get_upload, device.org_id, sha256)
        if row is None:
            delivered = await conn.fetchval(Q.blob_exists, device.org_id, sha256)
            if delivered is not None:
                return _complete(sha256, delivered, _DEFAULT_PART_SIZE)
            raise AttachmentRefused("upload_not_found", "start the upload first", 404)
    upload_id: str = row["upload_id"]
    try:
        await blobs.put_part(upload_id, index + 1, stream)
        upload = await blobs.get_upload(upload_id)
    except PartRejected as exc:
        raise AttachmentRefused("bad_part", exc.reason) from None
    except UploadNotFound:
        async with acquire() as conn:
            await conn.execute(Q.delete_upload_of, device.org_id, sha256, upload_id)
        raise AttachmentRefused(
            "upload_not_found", "the upload expired; start again", 404
        ) from None
    async with acquire() as conn:
        return await _status_or_finish(conn, blobs, device, upload)


class DeclaredMedia(msgspec.Struct, frozen=True, kw_only=True):
    """An attachment as a report declares it, and where its bytes stand for the organisation."""

    media_type: str
    sensitive: bool
    arrived: bool
    erased: bool
    """Erased by retention (or its report redacted): the bytes are gone or going for good."""


async def declared_media(
    conn: Conn, org_id: uuid.UUID, report_id: uuid.UUID, sha256: str
) -> DeclaredMedia | None:
    """The attachment ``sha256`` of the organisation's report, or None if it declares no such one
    (or the report is another organisation's, or does not exist: the three look alike)."""
    row = await conn.fetchrow(Q.report_attachment_for_download, org_id, report_id, sha256)
    return None if row is None else msgspec.convert(dict(row), DeclaredMedia)


async def _finish(conn: Conn, blobs: BlobStore, device: DeviceAuth, sha256: str) -> UploadStatus:
    """Verify the blob, then record it.

    The upload's row lock makes concurrent last parts finish it once. The store reads and hashes
    the whole blob before the hash bucket is taken, so pushes sharing the bucket do not wait for
    that; under the bucket only quick steps run: `complete` makes sure the bytes are (still)
    stored, restoring them from the verified copy if an erasure deleted them meanwhile, and this
    organisation's copy is recorded before any erasure can look again
    (docs/decisions/0105-blob-store.md, "Erasure").
    """
    org_id = device.org_id
    answer: UploadStatus | AttachmentRefused
    async with conn.transaction():
        row = await conn.fetchrow(Q.lock_upload, org_id, sha256)
        if row is None:  # another request finished it while we waited for the row
            return await _finished_meanwhile(conn, org_id, sha256)
        upload_id = row["upload_id"]
        try:
            incomplete = await _assemble(conn, blobs, org_id, upload_id, sha256)
            await conn.execute(Q.lock_blob_hash, sha256)
            if await conn.fetchval(Q.blob_erased_for_org, org_id, sha256):
                # Redacted while the parts came in (or were verified): keep nothing of it.
                await _discard_erased(conn, blobs, upload_id, sha256)
                answer = _erased()
            elif incomplete is not None:
                return incomplete
            else:
                info = await blobs.complete(upload_id)
                await _record(conn, org_id, sha256, info.size)
                answer = _complete(sha256, info.size, row["part_size"])
        except BlobHashMismatch:
            answer = AttachmentRefused(
                "hash_mismatch",
                "the parts do not add up to the declared sha256; nothing was kept, start again",
            )
        except UploadNotFound:  # the store no longer has it (swept as abandoned)
            answer = _expired()
        await conn.execute(Q.delete_upload, org_id, sha256)
    # Raised after the commit, so the forgotten upload stays forgotten; the store kept nothing.
    if isinstance(answer, AttachmentRefused):
        raise answer
    return answer


async def _finished_meanwhile(conn: Conn, org_id: uuid.UUID, sha256: str) -> UploadStatus:
    """The answer for a finish that found its upload already settled by a concurrent one."""
    await _refuse_if_erased(conn, org_id, sha256)
    delivered = await conn.fetchval(Q.blob_exists, org_id, sha256)
    if delivered is None:  # the other one found a hash mismatch
        raise AttachmentRefused("upload_not_found", "the upload was discarded", 404)
    return _complete(sha256, delivered, _DEFAULT_PART_SIZE)


async def _assemble(
    conn: Conn, blobs: BlobStore, org_id: uuid.UUID, upload_id: str, sha256: str
) -> UploadStatus | None:
    """The slow part of a finish (reading and hashing the whole blob), done before the hash
    bucket is taken; skipped for a hash already erased. The status if parts turn out missing."""
    if await conn.fetchval(Q.blob_erased_for_org, org_id, sha256):
        return None
    try:
        await blobs.assemble(upload_id)
    except UploadIncomplete:
        return await _status(blobs, await blobs.get_upload(upload_id))
    return None


async def _discard_erased(conn: Conn, blobs: BlobStore, upload_id: str, sha256: str) -> None:
    """Drop an upload of an erased hash, and the bytes if no organisation holds them (`assemble`
    may have stored them): what the erasure does, which left this upload to us because it does
    not wait for an upload being finished."""
    await blobs.abort(upload_id)
    if not await conn.fetchval(Q.blob_held_by_any_org, sha256):
        await blobs.delete(sha256)


async def _record(conn: Conn, org_id: uuid.UUID, sha256: str, size: int) -> None:
    """Record the organisation's copy and give every report declaring it a fresh status."""
    await conn.execute(Q.insert_blob, org_id, sha256, size)
    for report in await conn.fetch(Q.reports_declaring_blob, org_id, sha256):
        content = msgspec.json.decode(report["content"], type=Report)
        # Erased attachments of a redacted report count as settled, not awaited.
        await publish_report_state(
            conn, org_id, report["monitor_id"], report["id"], content.attachments
        )


async def erase_pending_attachments(conn: Conn, blobs: BlobStore, *, limit: int = 500) -> int:
    """Carry out up to ``limit`` erasures queued by redaction; returns how many were settled.

    Each runs in its own short transaction (``conn`` must not be in one): under the hash
    lock, the organisation's copy is dropped unless one of its live reports still declares the
    hash, and the bytes are deleted from the store only when no organisation holds them any more.
    Erasures of an organisation on legal hold wait, queued, until the hold is lifted.
    Deletion happens before the commit that removes the queue entry, so a crash anywhere leaves
    the entry for the next run, and deleting bytes already gone is a no-op.
    """
    done = 0
    for pending in await conn.fetch(Q.pending_blob_erasures, limit):
        if await _erase_one(conn, blobs, pending["org_id"], pending["sha256"]):
            done += 1
    return done


async def _erase_one(conn: Conn, blobs: BlobStore, org_id: uuid.UUID, sha256: str) -> bool:
    async with conn.transaction():
        await conn.execute(Q.lock_blob_hash, sha256)
        # A legal hold committed before this point wins, as it does over redaction (same share
        # lock, taken before the queue row as the redaction does, so the two cannot deadlock).
        settings = await conn.fetchrow(Q.lock_retention_settings, org_id)
        if settings is not None and settings["legal_hold"]:
            return False
        if await conn.fetchval(Q.lock_blob_erasure, org_id, sha256) is None:
            return False  # another worker settled it while we waited for the lock
        kept = bool(await conn.fetchval(Q.org_declares_blob_live, org_id, sha256))
        deleted = False
        if not kept:
            await conn.fetchval(Q.drop_org_blob, org_id, sha256)
            upload_id = await conn.fetchval(Q.take_upload, org_id, sha256)
            if upload_id is not None:  # parts of it, still coming in
                await blobs.abort(upload_id)
            if not await conn.fetchval(Q.blob_held_by_any_org, sha256):
                deleted = await blobs.delete(sha256)
        await conn.execute(Q.drop_blob_erasure, org_id, sha256)
        # Whether the bytes stayed for another organisation is not this one's to know.
        outcome = "kept_for_live_report" if kept else "erased"
        await record_system(
            conn, org_id, "retention", "attachment.erase", "attachment", sha256, outcome=outcome
        )
    _log.info(
        "attachment erasure settled",
        extra={"fields": {"org_id": str(org_id), "kept": kept, "bytes_deleted": deleted}},
    )
    return True
