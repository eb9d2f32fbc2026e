"""Blob store on S3-compatible object storage (MinIO, AWS S3) through the blocking minio client.

Every minio call goes through `S3BlobStore._run`, which runs it in a worker thread. Keys, under an
optional prefix: `sha256/<hash>` for blobs; `uploads/<id>/manifest` and `uploads/<id>/data` (the
target of the native S3 multipart upload) for resumable uploads.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import secrets
from collections.abc import AsyncIterable, Awaitable, Callable
from datetime import timedelta
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread
import certifi
import msgspec
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.datatypes import Part
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.util import Retry, Timeout

from storage.blobs.base import (
    MIN_PART_SIZE,
    BlobHashMismatch,
    BlobInfo,
    BlobNotFound,
    BlobStoreUnavailable,
    BlobStream,
    BlobTooLarge,
    HashingReader,
    PartInfo,
    PartRejected,
    Upload,
    UploadIncomplete,
    UploadNotFound,
    check_sha256,
)

__all__ = ["DEFAULT_PART_SIZE", "S3BlobStore"]

DEFAULT_PART_SIZE = 8 * 1024 * 1024
_CHUNK_SIZE = 1024 * 1024
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_MISSING = frozenset({"NoSuchKey", "NotFound", "ResourceNotFound"})
# Codes that mean the store is misconfigured or gone rather than that one request was wrong.
_UNAVAILABLE = frozenset(
    {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)

P = ParamSpec("P")
T = TypeVar("T")


class _UploadRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What `uploads/<id>/manifest` holds: the plan and the S3 multipart upload behind it."""

    upload: Upload
    s3_upload_id: str
    verified: bool = False
    """`assemble` checked the sha256 of the completed `data` object: it need not be read again."""


class S3BlobStore:
    """Blobs as objects in one bucket; see the module docstring for the key layout."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool,
        region: str | None = None,
        *,
        prefix: str = "",
        part_size: int = DEFAULT_PART_SIZE,
        http_client: urllib3.PoolManager | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} (the S3 minimum)")
        if prefix and not prefix.endswith("/"):
            raise ValueError("prefix must be empty or end with '/'")
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http_client or _default_http_client(),
        )
        self._bucket = bucket
        self._prefix = prefix
        self._part_size = part_size

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one blocking minio call in a worker thread; connection trouble becomes
        BlobStoreUnavailable. anyio waits for the thread even when cancelled, so a cleanup that
        follows never races the call."""
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
        except S3Error as exc:
            if exc.code in _UNAVAILABLE:
                raise BlobStoreUnavailable(f"{self._bucket}: {exc.code}") from exc
            raise
        except (urllib3.exceptions.HTTPError, ServerError, InvalidResponseError) as exc:
            raise BlobStoreUnavailable(f"object storage unreachable: {exc}") from exc

    def _blob_key(self, sha256: str) -> str:
        return f"{self._prefix}sha256/{check_sha256(sha256)}"

    def _upload_key(self, upload_id: str, name: str) -> str:
        # Upload ids come from clients: only our own format may become a key.
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound(upload_id)
        return f"{self._prefix}uploads/{upload_id}/{name}"

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        if not await self._run(self._client.bucket_exists, self._bucket):
            try:
                await self._run(self._client.make_bucket, self._bucket)
            except S3Error as exc:
                if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

    async def check(self) -> None:
        """See `BlobStore.check`: the bucket must exist and answer."""
        if not await self._run(self._client.bucket_exists, self._bucket):
            raise BlobStoreUnavailable(f"bucket {self._bucket} does not exist")

    # -- whole blobs ----------------------------------------------------------------------------

    async def put(
        self, stream: AsyncIterable[bytes], expected_sha256: str, size_limit: int
    ) -> BlobInfo:
        """See `BlobStore.put`.

        The hash is declared up front, so the stream goes straight to a multipart upload on the
        blob's own key, and the upload is completed only once the hash is verified (aborted
        otherwise): nothing is visible until then, and no copy is needed.
        """
        existing = await self.stat(expected_sha256)
        if existing is not None:
            actual = await self._hash_stream(stream, size_limit)
            if actual != expected_sha256:
                raise BlobHashMismatch(expected_sha256, actual)
            return existing
        key = self._blob_key(expected_sha256)
        hasher = hashlib.sha256()
        size = 0
        buffer = bytearray()
        s3_upload: str | None = None
        parts: list[Part] = []
        try:
            async for chunk in stream:
                size += len(chunk)
                if size > size_limit:
                    raise BlobTooLarge(size_limit)
                buffer += chunk
                if len(buffer) >= self._part_size:
                    if s3_upload is None:
                        s3_upload = await self._run(_create, self._client, self._bucket, key)
                    await self._run(hasher.update, buffer)
                    parts.append(await self._send_part(key, s3_upload, len(parts) + 1, buffer))
            await self._run(hasher.update, buffer)
            if (actual := hasher.hexdigest()) != expected_sha256:
                raise BlobHashMismatch(expected_sha256, actual)
            if s3_upload is None:
                await self._run(_put_small, self._client, self._bucket, key, buffer)
            else:
                if buffer:
                    parts.append(await self._send_part(key, s3_upload, len(parts) + 1, buffer))
                await self._run(_complete, self._client, self._bucket, key, s3_upload, parts)
                s3_upload = None
        finally:
            buffer.clear()
            if s3_upload is not None:
                await _shielded(self._abort_quietly(key, s3_upload))
        return BlobInfo(sha256=expected_sha256, size=size)

    async def open(self, sha256: str) -> BlobStream:
        """See `BlobStore.open`."""
        key = self._blob_key(sha256)
        try:
            response = await self._run(self._client.get_object, self._bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise BlobNotFound(sha256) from None
            raise
        size = int(response.headers["Content-Length"])
        reader = HashingReader(response.read, sha256)

        def release() -> None:
            response.close()
            response.release_conn()

        async def read() -> bytes:
            return await self._run(reader.read, _CHUNK_SIZE)

        async def close() -> None:
            await _shielded(self._run(release))

        return BlobStream(BlobInfo(sha256=sha256, size=size), read, close)

    async def exists(self, sha256: str) -> bool:
        """See `BlobStore.exists`."""
        return await self.stat(sha256) is not None

    async def stat(self, sha256: str) -> BlobInfo | None:
        """See `BlobStore.stat`."""
        size = await self._object_size(self._blob_key(sha256))
        return None if size is None else BlobInfo(sha256=sha256, size=size)

    async def delete(self, sha256: str) -> bool:
        """See `BlobStore.delete`. With bucket versioning on, older versions would survive: the
        bucket must not be versioned, or redaction is not real (see ADR 0105)."""
        key = self._blob_key(sha256)
        if await self._object_size(key) is None:
            return False
        await self._run(self._client.remove_object, self._bucket, key)
        return True

    async def _object_size(self, key: str) -> int | None:
        try:
            result = await self._run(self._client.stat_object, self._bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                return None
            raise
        return result.size

    async def _hash_stream(self, stream: AsyncIterable[bytes], limit: int) -> str:
        hasher = hashlib.sha256()
        size = 0
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise BlobTooLarge(limit)
            await self._run(hasher.update, chunk)
        return hasher.hexdigest()

    # -- resumable multipart uploads ------------------------------------------------------------

    async def start_upload(self, expected_sha256: str, size: int) -> Upload:
        """See `BlobStore.start_upload`."""
        upload = Upload.plan(secrets.token_hex(16), expected_sha256, size, self._part_size)
        data_key = self._upload_key(upload.upload_id, "data")
        s3_upload = await self._run(_create, self._client, self._bucket, data_key)
        try:
            await self._save(_UploadRecord(upload=upload, s3_upload_id=s3_upload))
        except BaseException:
            await _shielded(self._abort_quietly(data_key, s3_upload))
            raise
        return upload

    async def get_upload(self, upload_id: str) -> Upload:
        """See `BlobStore.get_upload`."""
        return (await self._load(upload_id)).upload

    async def _save(self, record: _UploadRecord) -> None:
        manifest = msgspec.json.encode(record)
        await self._run(
            self._client.put_object,
            self._bucket,
            self._upload_key(record.upload.upload_id, "manifest"),
            io.BytesIO(manifest),
            len(manifest),
            content_type="application/json",
        )

    async def _load(self, upload_id: str) -> _UploadRecord:
        key = self._upload_key(upload_id, "manifest")
        try:
            raw = await self._run(_read_small_object, self._client, self._bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise UploadNotFound(upload_id) from None
            raise
        return msgspec.json.decode(raw, type=_UploadRecord)

    async def put_part(
        self, upload_id: str, part_number: int, stream: AsyncIterable[bytes]
    ) -> PartInfo:
        """See `BlobStore.put_part`. At most one part is held in memory."""
        record = await self._load(upload_id)
        length = record.upload.part_length(part_number)
        buffer = bytearray()
        async for chunk in stream:
            buffer += chunk
            if len(buffer) > length:
                raise PartRejected(upload_id, part_number, f"longer than {length} bytes")
        if len(buffer) != length:
            raise PartRejected(upload_id, part_number, f"{len(buffer)} bytes, not {length}")
        try:
            sent = await self._send_part(
                self._upload_key(upload_id, "data"), record.s3_upload_id, part_number, buffer
            )
        except S3Error as exc:
            if exc.code == "NoSuchUpload":
                raise UploadNotFound(upload_id) from None
            raise
        return PartInfo(number=part_number, size=length, etag=sent.etag)

    async def _send_part(self, key: str, s3_upload: str, number: int, buffer: bytearray) -> Part:
        """Upload `buffer` as part `number`, then empty it."""
        try:
            etag = await self._run(
                _upload_part, self._client, self._bucket, key, s3_upload, number, buffer
            )
        finally:
            # An idle worker thread keeps its last call's arguments alive; emptying the buffer
            # in place frees the part now rather than whenever that thread next runs.
            buffer.clear()
        return Part(number, etag)

    async def list_parts(self, upload_id: str) -> list[PartInfo]:
        """See `BlobStore.list_parts`."""
        record = await self._load(upload_id)
        try:
            parts = await self._run(
                _list_all_parts,
                self._client,
                self._bucket,
                self._upload_key(upload_id, "data"),
                record.s3_upload_id,
            )
        except S3Error as exc:
            if exc.code == "NoSuchUpload":
                raise UploadNotFound(upload_id) from None
            raise
        return [PartInfo(number=p.part_number, size=p.size or 0, etag=p.etag) for p in parts]

    async def assemble(self, upload_id: str) -> BlobInfo:
        """See `BlobStore.assemble`.

        The parts are assembled into `uploads/<id>/data`, which is read back and hashed (streamed,
        never whole in memory); the manifest then records it as verified, and it is server-side
        copied to its content address. minio's `copy_object` switches to a multipart compose
        above 5 GiB, so any S3 object size works.
        """
        record = await self._load(upload_id)
        if not record.verified:
            await self._verify_data(record)
            await self._save(msgspec.structs.replace(record, verified=True))
        await self._copy_into_place(record.upload)
        return BlobInfo(sha256=record.upload.sha256, size=record.upload.size)

    async def complete(self, upload_id: str) -> BlobInfo:
        """See `BlobStore.complete`: after `assemble`, a look at the blob (a copy if it went
        meanwhile) and the removal of the upload's objects."""
        info = await self.assemble(upload_id)
        await self.abort(upload_id)
        return info

    async def _verify_data(self, record: _UploadRecord) -> None:
        upload = record.upload
        data_key = self._upload_key(upload.upload_id, "data")
        try:
            parts = await self.list_parts(upload.upload_id)
        except UploadNotFound:
            # An earlier assemble got as far as assembling the data object, then failed.
            if await self._object_size(data_key) is None:
                await self.abort(upload.upload_id)
                raise
        else:
            if missing := upload.missing_parts(parts):
                raise UploadIncomplete(upload.upload_id, missing)
            listed = [Part(p.number, p.etag) for p in parts if p.number <= upload.part_count]
            await self._run(
                _complete, self._client, self._bucket, data_key, record.s3_upload_id, listed
            )
        try:
            await self._verify_object(data_key, upload.sha256)
        except BlobHashMismatch:
            await self.abort(upload.upload_id)
            raise

    async def _copy_into_place(self, upload: Upload) -> None:
        if not await self.exists(upload.sha256):
            source = CopySource(self._bucket, self._upload_key(upload.upload_id, "data"))
            blob_key = self._blob_key(upload.sha256)
            await self._run(self._client.copy_object, self._bucket, blob_key, source)

    async def _verify_object(self, key: str, sha256: str) -> None:
        response = await self._run(self._client.get_object, self._bucket, key)
        reader = HashingReader(response.read, sha256)
        try:
            while await self._run(reader.read, _CHUNK_SIZE):
                pass
        finally:
            await _shielded(self._run(_release, response))

    async def abort(self, upload_id: str) -> None:
        """See `BlobStore.abort`."""
        try:
            record = await self._load(upload_id)
        except UploadNotFound:
            return
        data_key = self._upload_key(upload_id, "data")
        manifest_key = self._upload_key(upload_id, "manifest")
        await _shielded(self._abort_quietly(data_key, record.s3_upload_id))
        await _shielded(self._run(self._client.remove_object, self._bucket, data_key))
        await _shielded(self._run(self._client.remove_object, self._bucket, manifest_key))

    async def _abort_quietly(self, key: str, s3_upload: str) -> None:
        try:
            await self._run(_abort, self._client, self._bucket, key, s3_upload)
        except S3Error as exc:
            if exc.code != "NoSuchUpload":
                raise

    async def presign_part_url(
        self, upload_id: str, part_number: int, expires: timedelta
    ) -> str | None:
        """See `BlobStore.presign_part_url`: a presigned UploadPart request. Bytes sent this way
        skip `put_part`'s length check; `complete` checks the listed sizes and the hash."""
        record = await self._load(upload_id)
        record.upload.part_length(part_number)
        return await self._run(
            self._client.get_presigned_url,
            "PUT",
            self._bucket,
            self._upload_key(upload_id, "data"),
            expires,
            extra_query_params={"partNumber": str(part_number), "uploadId": record.s3_upload_id},
        )


async def _shielded(cleanup: Awaitable[object]) -> None:
    # Cleanup must finish even when the request that started it is being cancelled.
    with anyio.CancelScope(shield=True):
        await cleanup


def _default_http_client() -> urllib3.PoolManager:
    # minio's own default retries 5 times with backoff and waits 5 minutes to connect; a health
    # check against a dead endpoint should fail within seconds instead.
    return urllib3.PoolManager(
        timeout=Timeout(connect=10, read=120),
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


def _put_small(client: Minio, bucket: str, key: str, data: bytearray) -> None:
    """Store a blob that fits in one part with a plain PutObject."""
    body = io.BytesIO(bytes(data))
    data.clear()
    client.put_object(bucket, key, body, body.getbuffer().nbytes)
    body.close()


def _read_small_object(client: Minio, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        return response.read()
    finally:
        _release(response)


def _release(response: urllib3.BaseHTTPResponse) -> None:
    response.close()
    response.release_conn()


# -- minio's private multipart API ---------------------------------------------------------------
# minio 7.2 exposes multipart uploads only inside put_object, which completes on its own and so
# cannot wait for a hash check. Its low-level S3 calls are private; they are used here and only
# here, so a minio upgrade that changes them breaks one place (pinned in requirements.lock).


def _create(client: Minio, bucket: str, key: str) -> str:
    return client._create_multipart_upload(bucket, key, {})


def _upload_part(
    client: Minio, bucket: str, key: str, s3_upload: str, number: int, data: bytearray
) -> str:
    # minio only needs a bytes-like body (len, hashlib, urllib3's buffer API); passing the
    # bytearray itself avoids copying a whole part.
    body: bytes = data  # type: ignore[assignment]
    return client._upload_part(bucket, key, body, None, s3_upload, number)


def _list_all_parts(client: Minio, bucket: str, key: str, s3_upload: str) -> list[Part]:
    parts: list[Part] = []
    marker: str | None = None
    while True:
        page = client._list_parts(bucket, key, s3_upload, part_number_marker=marker)
        parts.extend(page.parts)
        if not page.is_truncated:
            return parts
        marker = page.next_part_number_marker


def _complete(client: Minio, bucket: str, key: str, s3_upload: str, parts: list[Part]) -> None:
    client._complete_multipart_upload(bucket, key, s3_upload, parts)


def _abort(client: Minio, bucket: str, key: str, s3_upload: str) -> None:
    client._abort_multipart_upload(bucket, key, s3_upload)
