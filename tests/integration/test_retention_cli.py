"""``fairwatch retention run`` also carries out the attachment erasures redaction queued."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from storage.blobs import LocalBlobStore
from tests.conftest import truncate_all
from tests.integration.test_attachment_erasure import (
    PHOTO,
    new_org,
    new_report,
    redact,
    sha,
    upload,
)
from tests.integration.test_cli import run_cli

pytestmark = pytest.mark.db


async def test_retention_run_erases_queued_attachment_blobs(
    pool: asyncpg.Pool, database_dsn: str, tmp_path: Path
) -> None:
    # The store the CLI opens from FAIRWATCH_DATA_DIR (settings.blob_dir).
    store = LocalBlobStore(tmp_path / "blobs")
    try:
        async with pool.acquire() as conn:
            org = await new_org(conn)
            report = await new_report(conn, org, PHOTO)
            assert (await upload(conn, store, org, PHOTO)).complete
        # Redacted by a job that died before deleting anything.
        await redact(pool, org, report)
        assert await store.exists(sha(PHOTO))

        env = {"FAIRWATCH_DATABASE_URL": database_dsn, "FAIRWATCH_DATA_DIR": str(tmp_path)}
        result = run_cli("retention", "run", env=env)
        assert result.returncode == 0, result.stderr
        assert "attachments of redacted reports: 1 erasures carried out" in result.stdout
        assert not await store.exists(sha(PHOTO))
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM blob_erasures") == 0

        again = run_cli("retention", "run", env=env)
        assert again.returncode == 0, again.stderr
        assert "erasures" not in again.stdout
    finally:
        await truncate_all(pool)
