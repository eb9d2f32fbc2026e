"""The run record of a risk scan (start, end, data watermark, parameters, outcome, error) and the
scheduler's side of it: per-organisation schedules become queued runs and ``risk.scan`` jobs."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from cases.taxonomy import load_taxonomy
from server.scheduler import DEFAULT_RISK_CRON, cron_trigger, sync_risk_schedules
from storage import risk_runs
from storage.db import Conn
from storage.risk import RiskRepository, ScanParams, ScheduleDraft
from storage.risk_runs import execute_run, resolve_params
from tests.api.test_alerts_data import cluster_cell, seed_reports

pytestmark = pytest.mark.db

TAXONOMY = load_taxonomy()


async def _org(db: Conn) -> uuid.UUID:
    org_id: uuid.UUID = await db.fetchval(
        "INSERT INTO orgs (slug, name) VALUES ($1, 'Risk run test') RETURNING id",
        f"risk-{uuid.uuid4().hex[:8]}",
    )
    return org_id


async def test_a_run_records_its_data_watermark_parameters_and_clusters(db: Conn) -> None:
    org_id = await _org(db)
    seeded = await seed_reports(db, org_id)
    params = resolve_params(
        ScanParams(study_days=60, replicas=199, analysis_date=seeded.analysis_date),
        today=dt.date.today(),
    )
    repo = RiskRepository(db)
    queued = await repo.add_run(org_id, params, trigger="api", raise_alerts=False)
    assert queued.state == "queued" and queued.started_at is None

    run = await execute_run(db, org_id, queued.id, TAXONOMY)

    assert run.state == "succeeded", run.error
    assert run.started_at is not None and run.finished_at is not None
    assert run.finished_at >= run.started_at
    assert run.report_count == len(seeded.background) + len(seeded.cluster)
    assert run.watermark_received_at == seeded.max_received_at
    assert run.watermark_change_no is not None
    assert run.params["seed"] == params.seed and run.params["analysis_date"] == str(
        seeded.analysis_date
    )
    assert run.code_version and "cases.risk" in run.code_version
    assert run.results is not None
    space = next(s for s in run.results if s["kind"] == "space_time" and s["scope"] == "all")
    assert space["clusters"][0]["cells"] == [cluster_cell()]
    assert await execute_run(db, org_id, queued.id, TAXONOMY) == run  # a retried job: no rerun


async def test_a_failing_run_records_the_error_and_leaves_no_alerts(
    db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    org_id = await _org(db)
    seeded = await seed_reports(db, org_id, background=40, cluster=6)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("scan exploded")

    monkeypatch.setattr(risk_runs, "run_scans", broken)
    params = resolve_params(
        ScanParams(study_days=60, replicas=99, analysis_date=seeded.analysis_date),
        today=dt.date.today(),
    )
    queued = await RiskRepository(db).add_run(org_id, params, trigger="api", raise_alerts=True)
    run = await execute_run(db, org_id, queued.id, TAXONOMY)
    assert run.state == "failed"
    assert run.error == "RuntimeError: scan exploded"
    assert run.finished_at is not None and run.results is None
    assert await db.fetchval("SELECT count(*) FROM alerts WHERE org_id = $1", org_id) == 0


async def test_replaying_a_past_period_sees_only_reports_received_by_then(db: Conn) -> None:
    org_id = await _org(db)
    seeded = await seed_reports(db, org_id, background=60, cluster=6)
    past = seeded.analysis_date - dt.timedelta(days=10)
    params = resolve_params(
        ScanParams(study_days=30, replicas=0, analysis_date=past, entity_scan=False),
        today=dt.date.today(),
    )
    queued = await RiskRepository(db).add_run(org_id, params, trigger="api", raise_alerts=False)
    run = await execute_run(db, org_id, queued.id, TAXONOMY)
    cutoff = dt.datetime.combine(past + dt.timedelta(days=1), dt.time(0), dt.UTC)
    expected = await db.fetchval(
        "SELECT count(*) FROM reports WHERE org_id = $1 AND received_at < $2"
        " AND occurred_at >= $3",
        org_id, cutoff, cutoff - dt.timedelta(days=30),
    )  # fmt: skip
    assert run.state == "succeeded"
    assert run.report_count == expected
    assert run.watermark_received_at is not None and run.watermark_received_at < cutoff


async def test_schedules_become_scheduler_jobs_per_org(pool: asyncpg.Pool) -> None:
    # Committed rows: the scheduler reads through the pool, like the real leader does.
    async with pool.acquire() as conn:
        plain = await _org(conn)
        custom = await _org(conn)
        schedule = await RiskRepository(conn).add_schedule(
            custom,
            ScheduleDraft(name="hourly coercion", cron="5 * * * *", params=ScanParams(replicas=99)),
        )
    scheduler = AsyncIOScheduler(timezone="UTC")
    try:
        await sync_risk_schedules(scheduler, pool)
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert f"risk:default:{plain}" in jobs
        assert f"risk:default:{custom}" not in jobs
        assert f"risk:{schedule.id}" in jobs
        assert "minute='5'" in str(jobs[f"risk:{schedule.id}"].trigger)
        assert str(jobs[f"risk:default:{plain}"].trigger) == str(cron_trigger(DEFAULT_RISK_CRON))
        # Disabling the schedule removes its job (and the org does not fall back to the default).
        async with pool.acquire() as conn:
            await RiskRepository(conn).update_schedule(
                custom,
                schedule.id,
                ScheduleDraft(name="hourly coercion", cron="5 * * * *", enabled=False),
                schedule.version,
            )
        await sync_risk_schedules(scheduler, pool)
        assert f"risk:{schedule.id}" not in {job.id for job in scheduler.get_jobs()}
        # Firing an entry queues a run and its job.
        job = jobs[f"risk:default:{plain}"]
        run_id = await job.func(*job.args)
        async with pool.acquire() as conn:
            run = await RiskRepository(conn).get_run(plain, run_id)
            queued = await conn.fetchrow(
                "SELECT kind, org_id, payload::text AS payload FROM jobs WHERE kind = 'risk.scan'"
                " AND org_id = $1",
                plain,
            )
    finally:
        async with pool.acquire() as conn:
            for org in (plain, custom):
                for table in ("jobs", "risk_runs", "risk_schedules"):
                    await conn.execute(f"DELETE FROM {table} WHERE org_id = $1", org)  # noqa: S608
                await conn.execute("DELETE FROM orgs WHERE id = $1", org)
    assert run.trigger == "schedule" and run.raise_alerts and run.state == "queued"
    assert run.params["analysis_date"] == str(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
    assert queued is not None
    assert msgspec.json.decode(queued["payload"]) == {"run_id": str(run_id)}
