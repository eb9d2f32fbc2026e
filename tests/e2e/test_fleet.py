"""A small fleet of simulated phones against the real app over loopback HTTP, with chaos: dropped
requests and answers, replayed and reshuffled batches, skewed clocks, interrupted uploads."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from server.runtime import open_resources
from server.settings import Settings
from server.worker import WorkerContext, run_worker_once
from sync.client.fleet import run_fleet
from tests.e2e.conftest import StaffLogin

pytestmark = [pytest.mark.e2e, pytest.mark.db]

DEVICES = 6
REPORTS = 120


async def _run_jobs(settings: Settings) -> None:
    """The worker's part: every job queued so far, as a worker process would run them."""
    resources = await open_resources(settings)
    try:
        context = WorkerContext(resources=resources)
        while await run_worker_once(resources.pool, batch=50, context=context):
            pass
    finally:
        await resources.pool.close()


async def test_a_chaotic_fleet_loses_and_duplicates_nothing(
    live_server: str,
    live_settings: Settings,
    org_admin: StaffLogin,
    pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    report = await run_fleet(
        live_server,
        org_admin.email,
        org_admin.password,
        devices=DEVICES,
        reports=REPORTS,
        chaos=True,
        seed=20250301,
        workdir=tmp_path,
        attachment_every=30,
        max_attachment_bytes=700 * 1024,
    )
    assert report.problems == []
    assert report.ok
    assert (report.devices, report.monitors) == (DEVICES, 5)
    assert report.reports_created == REPORTS
    assert report.reports_confirmed == REPORTS
    assert (report.reports_lost, report.reports_duplicated, report.reports_unexpected) == (0, 0, 0)
    assert report.mutations_rejected == 0
    assert report.outbox_left == 0
    assert report.attachments_declared > 0
    assert report.attachments_intact == report.attachments_declared
    assert report.conflicts_expected > 0
    assert report.conflicts_reported == report.conflicts_expected
    assert report.conflicts_recorded == report.conflicts_expected
    assert report.amendments > 0
    assert report.replay_mismatches == 0
    assert report.devices_wiped == 1
    assert "staff_reports" in report.verified_by
    # The chaos really happened (seeded, so these are stable for this seed).
    assert report.requests_dropped_before > 0
    assert report.requests_dropped_after > 0
    assert report.batches_replayed > 0
    assert report.uploads_interrupted > 0

    # What the fleet left for the worker (matching its reports, and again after the amendments
    # and withdrawals) runs through without a failure, and every live report is matched.
    await _run_jobs(live_settings)
    async with pool.acquire() as conn:
        org_id = await conn.fetchval(
            "SELECT org_id FROM staff_users WHERE email = $1", org_admin.email
        )
        kinds = {r["kind"] for r in await conn.fetch(
            "SELECT DISTINCT kind FROM jobs WHERE org_id = $1", org_id)}  # fmt: skip
        troubled = await conn.fetch(
            "SELECT kind, state, last_error FROM jobs"
            " WHERE org_id = $1 AND (state <> 'done' OR last_error IS NOT NULL)",
            org_id,
        )
        unmatched = await conn.fetchval(
            "SELECT count(*) FROM reports r WHERE r.org_id = $1 AND r.deleted_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM incident_members m WHERE m.report_id = r.id)",
            org_id,
        )
    assert {"reports.match_many", "reports.changed"} <= kinds
    assert troubled == []
    assert unmatched == 0
