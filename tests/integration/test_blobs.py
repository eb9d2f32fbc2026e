"""Blob stores against real backends: files on disk, and an S3-protocol server process."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage.blobs import (
    BlobHashMismatch,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    BlobTooLarge,
    LocalBlobStore,
    PartRejected,
    S3BlobStore,
    UploadIncomplete,
    UploadNotFound,
)
from storage.blobs.base import MIN_PART_SIZE
from tests.integration.conftest import Backend
from tests.s3server import S3Server

PART = MIN_PART_SIZE
MiB = 1024 * 1024


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def stream_of(data: bytes, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk_size):
        yield data[start : start + chunk_size]


async def read_all(store: BlobStore, sha256: str) -> bytes:
    async with await store.open(sha256) as stream:
        return b"".join([chunk async for chunk in stream])


def three_parts() -> bytes:
    """Two full parts and a short last one."""
    return os.urandom(2 * PART + 12_345)


def slices(data: bytes, part_size: int) -> dict[int, bytes]:
    return {
        n + 1: data[start : start + part_size]
        for n, start in enumerate(range(0, len(data), part_size))
    }


# -- whole blobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 100_000, PART + 1], ids=["empty", "1B", "100kB", "2parts"])
async def test_put_then_open_returns_the_same_bytes(blob_backend: Backend, size: int) -> None:
    data = os.urandom(size)
    info = await blob_backend.store.put(stream_of(data), sha256_of(data), size_limit=size)

    assert info == BlobInfo(sha256=sha256_of(data), size=size)
    async with await blob_backend.store.open(info.sha256) as stream:
        assert stream.info == info
        assert b"".join([chunk async for chunk in stream]) == data
    assert (
        blob_backend.contents()
        == blob_backend.blob_names()
        == [f"sha256/{_blob_suffix(blob_backend, info)}"]
    )


def _blob_suffix(blob_backend: Backend, info: BlobInfo) -> str:
    h = info.sha256
    return f"{h[:2]}/{h[2:4]}/{h}" if blob_backend.name == "local" else h


@pytest.mark.parametrize("size", [1000, PART + 1000], ids=["1part", "2parts"])
async def test_hash_mismatch_is_refused_and_nothing_is_kept(
    blob_backend: Backend, size: int
) -> None:
    data = os.urandom(size)
    declared = sha256_of(b"something else")

    with pytest.raises(BlobHashMismatch) as caught:
        await blob_backend.store.put(stream_of(data), declared, size_limit=size)

    assert caught.value.actual == sha256_of(data)
    assert blob_backend.contents() == []
    assert not await blob_backend.store.exists(declared)


@pytest.mark.parametrize("size", [1000, PART + 2 * 64 * 1024], ids=["1part", "2parts"])
async def test_too_large_is_refused_and_nothing_is_kept(blob_backend: Backend, size: int) -> None:
    data = os.urandom(size)

    with pytest.raises(BlobTooLarge):
        await blob_backend.store.put(stream_of(data), sha256_of(data), size_limit=size - 1)

    assert blob_backend.contents() == []
    assert not await blob_backend.store.exists(sha256_of(data))


async def test_same_content_is_stored_once(blob_backend: Backend) -> None:
    data = os.urandom(50_000)
    first = await blob_backend.store.put(stream_of(data), sha256_of(data), size_limit=len(data))
    second = await blob_backend.store.put(
        stream_of(data, 999), sha256_of(data), size_limit=len(data)
    )

    assert second == first
    assert len(blob_backend.contents()) == 1


async def test_known_hash_is_not_proof_of_content(blob_backend: Backend) -> None:
    data = os.urandom(50_000)
    await blob_backend.store.put(stream_of(data), sha256_of(data), size_limit=len(data))
    forged = os.urandom(50_000)

    with pytest.raises(BlobHashMismatch):
        await blob_backend.store.put(stream_of(forged), sha256_of(data), size_limit=len(forged))

    assert await read_all(blob_backend.store, sha256_of(data)) == data


async def test_interrupted_put_keeps_nothing(blob_backend: Backend) -> None:
    data = os.urandom(PART + 100_000)

    async def dropped_connection() -> AsyncIterator[bytes]:
        async for chunk in stream_of(data[: PART + 50_000]):
            yield chunk
        raise ConnectionResetError("device went offline")

    with pytest.raises(ConnectionResetError):
        await blob_backend.store.put(dropped_connection(), sha256_of(data), size_limit=len(data))

    assert blob_backend.contents() == []


async def test_exists_stat_delete(blob_backend: Backend) -> None:
    data = os.urandom(4321)
    digest = sha256_of(data)
    assert not await blob_backend.store.exists(digest)
    assert await blob_backend.store.stat(digest) is None

    await blob_backend.store.put(stream_of(data), digest, size_limit=len(data))

    assert await blob_backend.store.exists(digest)
    assert await blob_backend.store.stat(digest) == BlobInfo(sha256=digest, size=len(data))
    assert await blob_backend.store.delete(digest) is True
    assert not await blob_backend.store.exists(digest)
    assert await blob_backend.store.delete(digest) is False
    assert blob_backend.contents() == []
    with pytest.raises(BlobNotFound):
        await blob_backend.store.open(digest)


async def test_corruption_at_rest_is_detected_on_read(blob_backend: Backend) -> None:
    data = os.urandom(300_000)
    digest = sha256_of(data)
    await blob_backend.store.put(stream_of(data), digest, size_limit=len(data))
    blob_backend.overwrite_blob(digest, data[:-1] + bytes([data[-1] ^ 1]))

    with pytest.raises(BlobHashMismatch):
        await read_all(blob_backend.store, digest)


async def test_malformed_address_is_refused(blob_store: BlobStore) -> None:
    with pytest.raises(ValueError, match="sha256"):
        await blob_store.stat("../../etc/passwd")


# -- resumable multipart uploads -----------------------------------------------------------------


async def test_multipart_out_of_order_with_a_resent_part(blob_backend: Backend) -> None:
    data = three_parts()
    upload = await blob_backend.store.start_upload(sha256_of(data), len(data))
    assert (upload.part_size, upload.part_count) == (PART, 3)
    parts = slices(data, upload.part_size)

    for number in (3, 1, 2):
        sent = await blob_backend.store.put_part(upload.upload_id, number, stream_of(parts[number]))
        assert (sent.number, sent.size) == (number, len(parts[number]))
    first_two = await blob_backend.store.list_parts(upload.upload_id)
    resent = await blob_backend.store.put_part(upload.upload_id, 2, stream_of(parts[2], 100_000))
    listed = await blob_backend.store.list_parts(upload.upload_id)

    assert [p.number for p in listed] == [1, 2, 3]
    assert [p.size for p in listed] == [PART, PART, 12_345]
    assert listed == first_two
    assert listed[1] == resent
    info = await blob_backend.store.complete(upload.upload_id)
    assert info == BlobInfo(sha256=sha256_of(data), size=len(data))
    assert await read_all(blob_backend.store, info.sha256) == data
    assert len(blob_backend.contents()) == 1
    assert blob_backend.contents() == blob_backend.blob_names()


async def test_resending_a_part_replaces_it(blob_backend: Backend) -> None:
    data = three_parts()
    upload = await blob_backend.store.start_upload(sha256_of(data), len(data))
    parts = slices(data, upload.part_size)
    garbled = await blob_backend.store.put_part(upload.upload_id, 1, stream_of(os.urandom(PART)))
    for number, part in parts.items():
        await blob_backend.store.put_part(upload.upload_id, number, stream_of(part))

    listed = await blob_backend.store.list_parts(upload.upload_id)

    assert listed[0].etag != garbled.etag
    assert [p.number for p in listed] == [1, 2, 3]
    assert await blob_backend.store.complete(upload.upload_id) == BlobInfo(
        sha256=sha256_of(data), size=len(data)
    )


async def test_interrupted_upload_resumes_with_only_the_missing_parts(
    blob_backend: Backend,
) -> None:
    data = three_parts()
    upload = await blob_backend.store.start_upload(sha256_of(data), len(data))
    parts = slices(data, upload.part_size)
    for number in (1, 2):  # the device loses its connection after part 2
        await blob_backend.store.put_part(upload.upload_id, number, stream_of(parts[number]))
    with pytest.raises(UploadIncomplete) as caught:
        await blob_backend.store.complete(upload.upload_id)
    assert caught.value.missing == [3]

    # Later, knowing only the upload id, the device asks what arrived and sends the rest.
    plan = await blob_backend.store.get_upload(upload.upload_id)
    have = {p.number for p in await blob_backend.store.list_parts(upload.upload_id)}
    resent = [n for n in range(1, plan.part_count + 1) if n not in have]
    for number in resent:
        await blob_backend.store.put_part(upload.upload_id, number, stream_of(parts[number]))
    info = await blob_backend.store.complete(upload.upload_id)

    assert plan == upload
    assert resent == [3]
    assert info.sha256 == sha256_of(data)
    assert await read_all(blob_backend.store, info.sha256) == data
    with pytest.raises(UploadNotFound):
        await blob_backend.store.list_parts(upload.upload_id)


async def test_complete_with_a_wrong_declared_hash_keeps_nothing(blob_backend: Backend) -> None:
    data = three_parts()
    declared = sha256_of(data[::-1])
    upload = await blob_backend.store.start_upload(declared, len(data))
    for number, part in slices(data, upload.part_size).items():
        await blob_backend.store.put_part(upload.upload_id, number, stream_of(part))

    with pytest.raises(BlobHashMismatch) as caught:
        await blob_backend.store.complete(upload.upload_id)

    assert (caught.value.expected, caught.value.actual) == (declared, sha256_of(data))
    assert blob_backend.contents() == []
    assert not await blob_backend.store.exists(declared)
    with pytest.raises(UploadNotFound):
        await blob_backend.store.list_parts(upload.upload_id)


async def test_complete_of_an_existing_blob_returns_it_and_keeps_one_copy(
    blob_backend: Backend,
) -> None:
    data = three_parts()
    stored = await blob_backend.store.put(stream_of(data), sha256_of(data), size_limit=len(data))
    upload = await blob_backend.store.start_upload(sha256_of(data), len(data))
    for number, part in slices(data, upload.part_size).items():
        await blob_backend.store.put_part(upload.upload_id, number, stream_of(part))

    assert await blob_backend.store.complete(upload.upload_id) == stored
    assert blob_backend.contents() == blob_backend.blob_names()
    assert len(blob_backend.contents()) == 1


async def test_abort_discards_the_upload(blob_backend: Backend) -> None:
    data = three_parts()
    upload = await blob_backend.store.start_upload(sha256_of(data), len(data))
    await blob_backend.store.put_part(upload.upload_id, 1, stream_of(data[:PART]))
    assert blob_backend.contents() != []

    await blob_backend.store.abort(upload.upload_id)

    assert blob_backend.contents() == []
    with pytest.raises(UploadNotFound):
        await blob_backend.store.list_parts(upload.upload_id)
    with pytest.raises(UploadNotFound):
        await blob_backend.store.put_part(upload.upload_id, 2, stream_of(data[PART : 2 * PART]))
    await blob_backend.store.abort(upload.upload_id)  # idempotent


@pytest.mark.parametrize(
    ("number", "length"),
    [(1, PART - 1), (1, PART + 1), (3, 12_344), (0, PART), (4, 10)],
    ids=["short", "long", "short-last", "zero", "beyond-last"],
)
async def test_part_outside_the_plan_is_rejected(
    blob_backend: Backend, number: int, length: int
) -> None:
    data = three_parts()
    upload = await blob_backend.store.start_upload(sha256_of(data), len(data))

    with pytest.raises(PartRejected):
        await blob_backend.store.put_part(upload.upload_id, number, stream_of(os.urandom(length)))

    assert await blob_backend.store.list_parts(upload.upload_id) == []


async def test_unknown_upload_ids_are_not_found(blob_store: BlobStore) -> None:
    for upload_id in ("0" * 32, "../../sha256", ""):
        with pytest.raises(UploadNotFound):
            await blob_store.list_parts(upload_id)
        with pytest.raises(UploadNotFound):
            await blob_store.complete(upload_id)


# -- memory --------------------------------------------------------------------------------------


def _pseudo_random_chunks(total: int, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    rng = random.Random(20_240_601)
    for start in range(0, total, chunk_size):
        yield rng.randbytes(min(chunk_size, total - start))


async def _async_chunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_twenty_megabytes_stream_through_bounded_memory(blob_store: BlobStore) -> None:
    size = 20 * MiB
    hasher = hashlib.sha256()
    for chunk in _pseudo_random_chunks(size):
        hasher.update(chunk)
    digest = hasher.hexdigest()

    tracemalloc.start()
    try:
        info = await blob_store.put(_async_chunks(_pseudo_random_chunks(size)), digest, size)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read_back = hashlib.sha256()
        length = 0
        async with await blob_store.open(digest) as stream:
            async for chunk in stream:
                read_back.update(chunk)
                length += len(chunk)
        _, open_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert info == BlobInfo(sha256=digest, size=size)
    assert (read_back.hexdigest(), length) == (digest, size)
    # The S3 put holds one 5 MiB part; the local one and every read hold a chunk or two.
    assert put_peak < size // 3, f"put peaked at {put_peak / MiB:.1f} MiB"
    assert open_peak < size // 4, f"open peaked at {open_peak / MiB:.1f} MiB"


# -- health and backend specifics ----------------------------------------------------------------


async def test_check_passes_on_a_working_store(blob_store: BlobStore) -> None:
    await blob_store.check()


async def test_local_check_fails_when_the_root_is_not_writable(tmp_path: Path) -> None:
    root = tmp_path / "not-a-directory"
    root.write_bytes(b"")

    with pytest.raises(BlobStoreUnavailable):
        await LocalBlobStore(root).check()


async def test_local_store_has_no_presigned_urls(local_blob_backend: Backend) -> None:
    data = three_parts()
    upload = await local_blob_backend.store.start_upload(sha256_of(data), len(data))

    assert (
        await local_blob_backend.store.presign_part_url(upload.upload_id, 1, timedelta(hours=1))
        is None
    )


@pytest.mark.s3
async def test_s3_check_fails_for_a_missing_bucket(s3_server: S3Server) -> None:
    store = S3BlobStore(
        s3_server.endpoint,
        s3_server.access_key,
        s3_server.secret_key,
        "no-such-bucket-for-fairwatch",
        secure=s3_server.secure,
        region=s3_server.region,
    )
    with pytest.raises(BlobStoreUnavailable):
        await store.check()


@pytest.mark.s3
async def test_s3_check_fails_when_the_server_is_unreachable() -> None:
    store = S3BlobStore("127.0.0.1:9", "key", "secret", "bucket", secure=False, region="x")
    with pytest.raises(BlobStoreUnavailable):
        await store.check()


@pytest.mark.s3
async def test_s3_parts_uploaded_through_presigned_urls(s3_blob_backend: Backend) -> None:
    store = s3_blob_backend.store
    data = three_parts()
    upload = await store.start_upload(sha256_of(data), len(data))

    async with httpx.AsyncClient() as http:
        for number, part in slices(data, upload.part_size).items():
            url = await store.presign_part_url(upload.upload_id, number, timedelta(minutes=5))
            assert url is not None
            response = await http.put(url, content=part)
            assert response.status_code == 200, response.text
    listed = await store.list_parts(upload.upload_id)

    assert [(p.number, p.size) for p in listed] == [(1, PART), (2, PART), (3, 12_345)]
    assert (await store.complete(upload.upload_id)).sha256 == sha256_of(data)
    assert await read_all(store, sha256_of(data)) == data


@pytest.mark.s3
async def test_s3_complete_retried_after_a_crash_mid_complete(
    s3_blob_backend: Backend, s3_server: S3Server
) -> None:
    store = s3_blob_backend.store
    assert isinstance(store, S3BlobStore)
    data = three_parts()
    upload = await store.start_upload(sha256_of(data), len(data))
    for number, part in slices(data, upload.part_size).items():
        await store.put_part(upload.upload_id, number, stream_of(part))
    # A previous complete() assembled the multipart upload and then died before the copy.
    [data_key] = [n for n in s3_blob_backend.contents() if n.startswith("multipart:")]
    prefixed = store._prefix + data_key.removeprefix("multipart:")
    client = s3_server.client()
    [pending] = client._list_multipart_uploads(s3_server.bucket, prefix=prefixed).uploads
    assert pending.upload_id is not None
    parts = client._list_parts(s3_server.bucket, prefixed, pending.upload_id).parts
    client._complete_multipart_upload(s3_server.bucket, prefixed, pending.upload_id, parts)
    assert not any(n.startswith("multipart:") for n in s3_blob_backend.contents())

    info = await store.complete(upload.upload_id)

    assert info == BlobInfo(sha256=sha256_of(data), size=len(data))
    assert await read_all(store, info.sha256) == data
    assert s3_blob_backend.contents() == s3_blob_backend.blob_names()


class _ThreadRecorder:
    """Stands in for the minio client (or one of its responses), noting which thread calls it."""

    def __init__(self, inner: Any, calls: list[tuple[str, threading.Thread]]) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append((name, threading.current_thread()))
            result = attribute(*args, **kwargs)
            return _ThreadRecorder(result, self._calls) if name == "get_object" else result

        return call


@pytest.mark.s3
async def test_s3_store_never_calls_minio_on_the_event_loop(
    s3_blob_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = s3_blob_backend.store
    assert isinstance(store, S3BlobStore)
    calls: list[tuple[str, threading.Thread]] = []
    monkeypatch.setattr(store, "_client", _ThreadRecorder(store._client, calls))
    data = three_parts()
    digest = sha256_of(data)

    await store.check()
    await store.put(stream_of(data), digest, size_limit=len(data))
    await read_all(store, digest)
    upload = await store.start_upload(digest, len(data))
    for number, part in slices(data, upload.part_size).items():
        await store.put_part(upload.upload_id, number, stream_of(part))
    await store.presign_part_url(upload.upload_id, 1, timedelta(minutes=1))
    await store.list_parts(upload.upload_id)
    await store.complete(upload.upload_id)
    await store.stat(digest)
    await store.delete(digest)

    names = {name for name, _ in calls}
    assert {"_upload_part", "_complete_multipart_upload", "get_object", "read"} <= names
    assert {"get_presigned_url", "stat_object", "remove_object", "bucket_exists"} <= names
    loop_thread = threading.current_thread()
    on_loop = [name for name, thread in calls if thread is loop_thread]
    assert on_loop == []
