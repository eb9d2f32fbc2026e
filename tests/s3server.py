"""A real S3-protocol server for the test session: moto in server mode as a separate process,
or the MinIO named by ``FAIRWATCH_TEST_S3_ENDPOINT`` (with ``FAIRWATCH_TEST_S3_ACCESS_KEY``,
``_SECRET_KEY``, ``_BUCKET`` and ``_SECURE``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from minio import Minio

from storage.blobs import S3BlobStore
from storage.blobs.base import MIN_PART_SIZE

__all__ = ["S3Server", "s3_server"]

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
