"""Fixtures for integration tests against real backing services.

The S3 protocol is served by `moto` in server mode, as a separate process, unless
`FAIRWATCH_TEST_S3_ENDPOINT` names a real MinIO (with `FAIRWATCH_TEST_S3_ACCESS_KEY`, `_SECRET_KEY`,
`_BUCKET` and `_SECURE`). Each test gets its own key prefix, so runs never see each other's objects.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.blobs import BlobStore, LocalBlobStore
from storage.blobs.base import MIN_PART_SIZE
from tests.s3server import S3Server

__all__ = ["Backend"]

_MOTO_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Backend:
    """A blob store under test plus ways to look behind its interface."""

    name: str
    store: BlobStore
    contents: Callable[[], list[str]]
    """Everything the store holds, temporaries and unfinished uploads included, sorted."""
    blob_names: Callable[[], list[str]]
    """The names under which finished blobs are held."""
    overwrite_blob: Callable[[str, bytes], None]
    """Replace a stored blob's bytes behind the store's back (simulates corruption at rest)."""


def _local_backend(root: Path) -> Backend:
    store = LocalBlobStore(root, part_size=MIN_PART_SIZE)

    def contents() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def blob_names() -> list[str]:
        return [name for name in contents() if name.startswith("sha256/")]

    def overwrite_blob(sha256: str, data: bytes) -> None:
        (root / "sha256" / sha256[:2] / sha256[2:4] / sha256).write_bytes(data)

    return Backend("local", store, contents, blob_names, overwrite_blob)


@pytest.fixture
def local_blob_backend(tmp_path: Path) -> Backend:
    """The local file store in a fresh directory."""
    return _local_backend(tmp_path / "blobs")


@pytest.fixture
def s3_blob_backend(s3_server: S3Server) -> Iterator[Backend]:
    """The S3 store under a fresh key prefix, emptied afterwards."""
    prefix = f"test-{uuid.uuid4().hex}/"
    client = s3_server.client()
    bucket = s3_server.bucket

    def pending_uploads() -> list[tuple[str, str]]:
        # minio has no public ListMultipartUploads; the test side may use the private one.
        result = client._list_multipart_uploads(bucket, prefix=prefix)
        return [(u.object_name, u.upload_id or "") for u in result.uploads]

    def contents() -> list[str]:
        objects = [
            o.object_name[len(prefix) :]
            for o in client.list_objects(bucket, prefix=prefix, recursive=True)
        ]
        uploads = [f"multipart:{name[len(prefix) :]}" for name, _ in pending_uploads()]
        return sorted(objects + uploads)

    def blob_names() -> list[str]:
        return [name for name in contents() if name.startswith("sha256/")]

    def overwrite_blob(sha256: str, data: bytes) -> None:
        client.put_object(bucket, f"{prefix}sha256/{sha256}", io.BytesIO(data), len(data))

    yield Backend("s3", s3_server.store(prefix), contents, blob_names, overwrite_blob)

    for name, upload_id in pending_uploads():
        client._abort_multipart_upload(bucket, name, upload_id)
    for obj in client.list_objects(bucket, prefix=prefix, recursive=True):
        client.remove_object(bucket, obj.object_name)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def blob_backend(request: pytest.FixtureRequest) -> Backend:
    """Each blob store blob_backend in turn (the S3 one only when `s3` tests are selected)."""
    found: Backend = request.getfixturevalue(f"{request.param}_blob_backend")
    return found


@pytest.fixture
def blob_store(blob_backend: Backend) -> BlobStore:
    """The store of the current blob_backend."""
    return blob_backend.store
