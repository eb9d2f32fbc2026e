"""Resumable, content-addressed attachment uploads from devices, over the blob store.

An upload is tracked per organisation and hash. Parts go to the blob store as they come; when the
last one is in, the store verifies the whole blob's sha256 (a mismatch keeps nothing), the blob is
recorded as delivered for that organisation, and every report declaring it gets a fresh status.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import timedelta

import msgspec

from cases.reports import Report
from storage.blobs import (
    BlobHashMismatch,
    BlobStore,
    BlobTooLarge,
    PartRejected,
    Upload,
    UploadIncomplete,
    UploadNotFound,
)
from storage.db import Conn
from storage.devices import DeviceAuth
from storage.errors import StorageError
from storage.feed import publish_report_state
from storage.queries import Q
from sync.attachments import UploadRequest, UploadStatus

__all__ = [
    "AttachmentRefused",
    "receive_part",
    "start_or_resume_upload",
    "upload_status_for",
]


def _expired() -> AttachmentRefused:
    return AttachmentRefused("upload_not_found", "the upload expired; start again", 404)


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
    conn: Conn,
    blobs: BlobStore,
    device: DeviceAuth,
    sha256: str,
    index: int,
    stream: AsyncIterable[bytes],
) -> UploadStatus:
    row = await conn.fetchrow(Q.get_upload, device.org_id, sha256)
    if row is None:
        delivered = await conn.fetchval(Q.blob_exists, device.org_id, sha256)
        if delivered is not None:
            return _complete(sha256, delivered, _DEFAULT_PART_SIZE)
        raise AttachmentRefused("upload_not_found", "start the upload first", 404)
    try:
        await blobs.put_part(row["upload_id"], index + 1, stream)
    except PartRejected as exc:
        raise AttachmentRefused("bad_part", exc.reason) from None
    except UploadNotFound:
        await conn.execute(Q.delete_upload, device.org_id, sha256)
        raise AttachmentRefused(
            "upload_not_found", "the upload expired; start again", 404
        ) from None
    return await _status_or_finish(conn, blobs, device, await blobs.get_upload(row["upload_id"]))


async def _finish(conn: Conn, blobs: BlobStore, device: DeviceAuth, sha256: str) -> UploadStatus:
    """Verify and record the blob; the row lock makes concurrent last parts finish it once."""
    async with conn.transaction():
        row = await conn.fetchrow(Q.lock_upload, device.org_id, sha256)
        if row is None:  # another request finished it while we waited for the lock
            delivered = await conn.fetchval(Q.blob_exists, device.org_id, sha256)
            if delivered is None:
                raise AttachmentRefused("upload_not_found", "the upload was discarded", 404)
            return _complete(sha256, delivered, _DEFAULT_PART_SIZE)
        try:
            info = await blobs.complete(row["upload_id"])
        except UploadIncomplete:
            return await _status(blobs, await blobs.get_upload(row["upload_id"]))
        except BlobHashMismatch:
            info = None
        await conn.execute(Q.delete_upload, device.org_id, sha256)
        if info is not None:
            await conn.execute(Q.insert_blob, device.org_id, sha256, info.size)
            for report in await conn.fetch(Q.reports_declaring_blob, device.org_id, sha256):
                content = msgspec.json.decode(report["content"], type=Report)
                await publish_report_state(
                    conn, device.org_id, report["monitor_id"], report["id"], content.attachments
                )
    if info is None:
        # Raised after the commit, so the forgotten upload stays forgotten; the store kept nothing.
        raise AttachmentRefused(
            "hash_mismatch",
            "the parts do not add up to the declared sha256; nothing was kept, start again",
        )
    return _complete(sha256, info.size, row["part_size"])
