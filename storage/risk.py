"""Risk scans as records: the parameters a scan takes, the run log (``risk_runs``), the
organisation's scan schedules and its alert threshold."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from msgspec import Meta

from cases.taxonomy import CategoryCode
from storage.db import Conn
from storage.errors import AlreadyExists, NotFound, StaleVersion
from storage.queries import Q

__all__ = [
    "DEFAULT_ALERT_MIN_RECURRENCE_DAYS",
    "RiskRepository",
    "RiskRun",
    "RiskSettings",
    "RunState",
    "RunTrigger",
    "ScanParams",
    "Schedule",
    "ScheduleDraft",
    "ScheduledScan",
]

DEFAULT_ALERT_MIN_RECURRENCE_DAYS = 100.0

RunState = Literal["queued", "running", "succeeded", "failed"]
RunTrigger = Literal["schedule", "api"]


class ScanParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What one run scans and how; every field has a default fit for a nightly run.

    ``analysis_date`` is the last day of the study period (default: today, or yesterday for a
    scheduled run); only reports received by the end of that day count, so a past period is
    replayed with the data that existed then. ``max_rings`` (K) caps circles at K rings of H3
    neighbours (as a radius of K cell-centre spacings). ``categories`` restricts the run to one
    scan over those categories; without it the run scans all categories and then each
    high-priority category group of the taxonomy.
    """

    h3_resolution: Annotated[int, Meta(ge=3, le=10)] = 7
    max_rings: Annotated[int, Meta(ge=0, le=100)] | None = None
    # K: a circle holds at most the K nearest cells (SaTScan's "maximum locations" style cap);
    # with the radius cap it keeps circles local in towns and lets them reach neighbouring
    # cells in sparse areas (docs/decisions/0101-space-time-scan.md, bench/results/risk.md).
    k_nearest: Annotated[int, Meta(ge=1, le=5000)] | None = 10
    max_radius_km: Annotated[float, Meta(ge=0.0, le=500.0)] = 30.0
    max_window_days: Annotated[int, Meta(ge=1, le=90)] = 7
    study_days: Annotated[int, Meta(ge=2, le=730)] = 365
    analysis_date: date | None = None
    min_reports: Annotated[int, Meta(ge=1, le=10_000)] = 3
    min_monitors: Annotated[int, Meta(ge=1, le=64)] = 2
    replicas: Annotated[int, Meta(ge=0, le=9999)] = 999
    seed: Annotated[int, Meta(ge=0, le=2**53)] | None = None
    categories: Annotated[list[CategoryCode], Meta(min_length=1, max_length=50)] | None = None
    entity_scan: bool = True


class RiskRun(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    trigger: RunTrigger
    schedule_key: str | None
    requested_by: uuid.UUID | None
    state: RunState
    params: dict[str, Any]
    raise_alerts: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    watermark_received_at: datetime | None
    watermark_change_no: int | None
    report_count: int | None
    alerts_raised: int
    alerts_updated: int
    code_version: str | None
    error: str | None
    results: list[dict[str, Any]] | None = None


class ScheduleDraft(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    cron: Annotated[str, Meta(min_length=9, max_length=100)]
    """Five-field crontab in UTC, e.g. ``30 2 * * *`` (02:30 every night)."""
    enabled: bool = True
    params: ScanParams = ScanParams()


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    cron: str
    enabled: bool
    params: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


class ScheduledScan(msgspec.Struct, frozen=True):
    """An entry the scheduler keeps: ``key`` is the schedule id, or ``default:<org>``."""

    key: str
    org_id: uuid.UUID
    cron: str
    params: dict[str, Any]


class RiskSettings(msgspec.Struct, frozen=True, kw_only=True):
    alert_min_recurrence_days: float = DEFAULT_ALERT_MIN_RECURRENCE_DAYS


def _run(row: asyncpg.Record, *, with_results: bool = False) -> RiskRun:
    results = None
    if with_results and row["results"] is not None:
        results = msgspec.json.decode(row["results"])
    return RiskRun(
        id=row["id"],
        org_id=row["org_id"],
        trigger=row["trigger"],
        schedule_key=row["schedule_key"],
        requested_by=row["requested_by"],
        state=row["state"],
        params=msgspec.json.decode(row["params"]),
        raise_alerts=row["raise_alerts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        watermark_received_at=row["watermark_received_at"],
        watermark_change_no=row["watermark_change_no"],
        report_count=row["report_count"],
        alerts_raised=row["alerts_raised"],
        alerts_updated=row["alerts_updated"],
        code_version=row["code_version"],
        error=row["error"],
        results=results,
    )


def _schedule(row: asyncpg.Record) -> Schedule:
    return Schedule(
        id=row["id"],
        name=row["name"],
        cron=row["cron"],
        enabled=row["enabled"],
        params=msgspec.json.decode(row["params"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class RiskRepository:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    # Runs

    async def add_run(
        self,
        org_id: uuid.UUID,
        params: ScanParams,
        *,
        trigger: RunTrigger,
        raise_alerts: bool,
        requested_by: uuid.UUID | None = None,
        schedule_key: str | None = None,
    ) -> RiskRun:
        row = await self._conn.fetchrow(
            Q.insert_risk_run,
            org_id,
            trigger,
            schedule_key,
            requested_by,
            msgspec.json.encode(params).decode(),
            raise_alerts,
        )
        assert row is not None
        return _run(row)

    async def get_run(self, org_id: uuid.UUID, run_id: uuid.UUID) -> RiskRun:
        row = await self._conn.fetchrow(Q.get_risk_run, org_id, run_id)
        if row is None:
            raise NotFound("risk run", run_id)
        return _run(row, with_results=True)

    async def list_runs(
        self, org_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[RiskRun]:
        at, last = after if after else (None, None)
        rows = await self._conn.fetch(Q.list_risk_runs, org_id, at, last, limit)
        return [_run(r) for r in rows]

    async def start_run(self, run_id: uuid.UUID) -> bool:
        """Mark a queued run as running; False if it already ran (a retried job)."""
        return bool(await self._conn.fetchval(Q.start_risk_run, run_id))

    async def finish_run(
        self,
        run_id: uuid.UUID,
        *,
        state: RunState,
        watermark_received_at: datetime | None = None,
        watermark_change_no: int | None = None,
        report_count: int | None = None,
        results: list[dict[str, Any]] | None = None,
        alerts_raised: int = 0,
        alerts_updated: int = 0,
        code_version: str | None = None,
        error: str | None = None,
    ) -> None:
        await self._conn.execute(
            Q.finish_risk_run,
            run_id,
            state,
            watermark_received_at,
            watermark_change_no,
            report_count,
            None if results is None else msgspec.json.encode(results).decode(),
            alerts_raised,
            alerts_updated,
            code_version,
            None if error is None else error[:2000],
        )

    # Settings

    async def settings(self, org_id: uuid.UUID) -> RiskSettings:
        value = await self._conn.fetchval(Q.get_risk_settings, org_id)
        return RiskSettings() if value is None else RiskSettings(alert_min_recurrence_days=value)

    async def save_settings(self, org_id: uuid.UUID, settings: RiskSettings) -> RiskSettings:
        await self._conn.execute(Q.upsert_risk_settings, org_id, settings.alert_min_recurrence_days)
        return settings

    # Schedules

    async def list_schedules(self, org_id: uuid.UUID) -> list[Schedule]:
        return [_schedule(r) for r in await self._conn.fetch(Q.list_risk_schedules, org_id)]

    async def get_schedule(self, org_id: uuid.UUID, schedule_id: uuid.UUID) -> Schedule:
        row = await self._conn.fetchrow(Q.get_risk_schedule, org_id, schedule_id)
        if row is None:
            raise NotFound("risk schedule", schedule_id)
        return _schedule(row)

    async def add_schedule(self, org_id: uuid.UUID, draft: ScheduleDraft) -> Schedule:
        try:
            row = await self._conn.fetchrow(
                Q.insert_risk_schedule,
                org_id,
                draft.name,
                draft.cron,
                draft.enabled,
                msgspec.json.encode(draft.params).decode(),
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("risk schedule", "name") from None
        assert row is not None
        return _schedule(row)

    async def update_schedule(
        self, org_id: uuid.UUID, schedule_id: uuid.UUID, draft: ScheduleDraft, version: int
    ) -> Schedule:
        try:
            row = await self._conn.fetchrow(
                Q.update_risk_schedule,
                org_id,
                schedule_id,
                version,
                draft.name,
                draft.cron,
                draft.enabled,
                msgspec.json.encode(draft.params).decode(),
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("risk schedule", "name") from None
        if row is None:
            current = await self.get_schedule(org_id, schedule_id)
            raise StaleVersion("risk schedule", schedule_id, current.version)
        return _schedule(row)

    async def delete_schedule(self, org_id: uuid.UUID, schedule_id: uuid.UUID) -> None:
        if await self._conn.fetchval(Q.delete_risk_schedule, org_id, schedule_id) is None:
            raise NotFound("risk schedule", schedule_id)

    async def scheduled_scans(self, default_cron: str) -> list[ScheduledScan]:
        """Every enabled schedule of every organisation, plus the default for orgs with none."""
        rows = await self._conn.fetch(Q.list_scheduled_scans, default_cron)
        return [
            ScheduledScan(r["key"], r["org_id"], r["cron"], msgspec.json.decode(r["params"]))
            for r in rows
        ]
