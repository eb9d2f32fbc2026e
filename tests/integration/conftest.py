"""Fixtures for integration tests against real backing services.

The S3 protocol is served by `moto` in server mode, as a separate process, unless
`FAIRWATCH_TEST_S3_ENDPOINT` names a real MinIO (with `FAIRWATCH_TEST_S3_ACCESS_KEY`, `_SECRET_KEY`,
`_BUCKET` and `_SECURE`). Each test gets its own key prefix, so runs never see each other's objects.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from minio import Minio

from storage.blobs import BlobStore, LocalBlobStore, S3BlobStore
from storage.blobs.base import MIN_PART_SIZE

__all__ = ["Backend", "S3Server"]

_MOTO_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class S3Server:
    """Where the S3-protocol server for this test session listens."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    secure: bool
    region: str | None

    def client(self) -> Minio:
        """A plain minio client, for test-side inspection independent of the store."""
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            region=self.region,
        )

    def store(self, prefix: str) -> S3BlobStore:
        """A store on this server's bucket under `prefix`."""
        return S3BlobStore(
            self.endpoint,
            self.access_key,
            self.secret_key,
            self.bucket,
            secure=self.secure,
            region=self.region,
            prefix=prefix,
            part_size=MIN_PART_SIZE,
        )


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_accepting(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _MOTO_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling for the server to accept, not timing anything
    raise RuntimeError(f"moto server did not accept connections within {_MOTO_START_TIMEOUT}s")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-protocol server process for the session (or the MinIO named in the env)."""
    if endpoint := os.environ.get("FAIRWATCH_TEST_S3_ENDPOINT"):
        server = S3Server(
            endpoint=endpoint,
            access_key=os.environ["FAIRWATCH_TEST_S3_ACCESS_KEY"],
            secret_key=os.environ["FAIRWATCH_TEST_S3_SECRET_KEY"],
            bucket=os.environ.get("FAIRWATCH_TEST_S3_BUCKET", "fairwatch-test"),
            secure=os.environ.get("FAIRWATCH_TEST_S3_SECURE", "false").lower()
            in {"1", "true", "yes"},
            region=None,
        )
        client = server.client()
        if not client.bucket_exists(server.bucket):
            client.make_bucket(server.bucket)
        yield server
        return

    port = _free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_accepting(port, process)
            server = S3Server(
                endpoint=f"127.0.0.1:{port}",
                access_key="fairwatch-test",
                secret_key="fairwatch-test-secret",
                bucket="fairwatch-test",
                secure=False,
                region="us-east-1",
            )
            server.client().make_bucket(server.bucket)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
