"""Executing one risk run: load the organisation's reports and entity links as of the run's
cut-off, run the scans (in a worker thread: numba releases the GIL), store every cluster in the
run record, and raise or update alerts and their webhook deliveries."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.metadata
import secrets
import uuid
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources

import msgspec

from cases.taxonomy import Taxonomy
from storage.db import Conn
from storage.queries import Q
from storage.risk import RiskRepository, RiskRun, ScanParams
from storage.risk_alerts import record_findings
from storage.risk_delivery import enqueue_deliveries
from storage.risk_scan import EntityNode, ScanData, ScanReport, run_scans

__all__ = ["code_version", "execute_run", "load_scan_data", "resolve_params"]


@functools.cache
def code_version() -> str:
    """The package version and a digest of the statistics code, stored with every result."""
    try:
        package = importlib.metadata.version("fairwatch")
    except importlib.metadata.PackageNotFoundError:
        package = "unknown"
    digest = hashlib.sha256()
    for entry in sorted(resources.files("cases.risk").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".py"):
            digest.update(entry.name.encode() + b"\0" + entry.read_bytes())
    return f"fairwatch {package}; cases.risk {digest.hexdigest()[:12]}"


def resolve_params(params: ScanParams, *, today: date, scheduled: bool = False) -> ScanParams:
    """Fill in what a run must record to be reproducible: the analysis date and the seed.

    A scheduled run analyses the last complete day (yesterday); an on-demand run, today.
    """
    analysis = params.analysis_date or (today - timedelta(days=1) if scheduled else today)
    seed = params.seed if params.seed is not None else secrets.randbits(31)
    return msgspec.structs.replace(params, analysis_date=analysis, seed=seed)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


async def load_scan_data(
    conn: Conn, org_id: uuid.UUID, params: ScanParams, taxonomy: Taxonomy
) -> ScanData:
    assert params.analysis_date is not None
    start = params.analysis_date - timedelta(days=params.study_days - 1)
    # Replays see only what had been received by the end of the analysis day.
    cutoff = min(_midnight(params.analysis_date + timedelta(days=1)), datetime.now(UTC))
    rows = await conn.fetch(
        Q.risk_scan_reports, org_id, _midnight(start),
        _midnight(params.analysis_date + timedelta(days=1)), cutoff,
    )  # fmt: skip
    reports = [
        ScanReport(
            id=r["id"],
            monitor_id=r["monitor_id"],
            device_id=r["device_id"],
            latitude=r["latitude"],
            longitude=r["longitude"],
            categories=tuple(
                sorted(
                    {taxonomy.canonical_code(c) if c in taxonomy else c for c in r["categories"]}
                )
            ),
            day=r["day"],
            received_at=r["received_at"],
            accuracy_m=r["accuracy_m"],
            country=r["country"],
        )
        for r in rows
    ]
    links: dict[uuid.UUID, dict[str, uuid.UUID]] = {}
    entities: dict[uuid.UUID, EntityNode] = {}
    if params.entity_scan and reports:
        for r in await conn.fetch(Q.risk_scan_entity_links, org_id, [x.id for x in reports]):
            links.setdefault(r["report_id"], {})[r["role"]] = r["entity_id"]
        linked = list({e for roles in links.values() for e in roles.values()})
        for r in await conn.fetch(Q.risk_entity_ancestry, org_id, linked):
            entities[r["id"]] = EntityNode(r["id"], r["parent_id"], r["legal_name"], r["kind"])
    return ScanData(
        reports=reports,
        links=links,
        entities=entities,
        study_start=start,
        analysis_date=params.analysis_date,
    )


async def execute_run(
    conn: Conn, org_id: uuid.UUID, run_id: uuid.UUID, taxonomy: Taxonomy
) -> RiskRun:
    """Run a queued run to its end (succeeded or failed, with the error recorded).

    Call inside a transaction; a failure rolls back the run's partial effects (a savepoint)
    and is recorded instead of raised, so the job that carried it completes.
    """
    repo = RiskRepository(conn)
    run = await repo.get_run(org_id, run_id)
    if not await repo.start_run(run_id):
        return run  # already done: a job retried after its worker died
    params = msgspec.convert(run.params, ScanParams)
    try:
        async with conn.transaction():
            await _execute(conn, repo, run, params, taxonomy)
    except Exception as exc:  # every failure is recorded on the run, not raised
        await repo.finish_run(
            run_id,
            state="failed",
            code_version=code_version(),
            error=f"{type(exc).__name__}: {exc}",
        )
    return await repo.get_run(org_id, run_id)


async def _execute(
    conn: Conn, repo: RiskRepository, run: RiskRun, params: ScanParams, taxonomy: Taxonomy
) -> None:
    threshold = (await repo.settings(run.org_id)).alert_min_recurrence_days
    change_no = await conn.fetchval(Q.risk_feed_watermark, run.org_id)
    data = await load_scan_data(conn, run.org_id, params, taxonomy)
    results, findings = await asyncio.to_thread(run_scans, data, params, taxonomy, threshold)
    raised = updated = 0
    if run.raise_alerts:
        events, raised, updated = await record_findings(
            conn, run.org_id, run.id, data, findings,
            params=msgspec.to_builtins(params), seed=params.seed or 0,
            code_version=code_version(), threshold_days=threshold,
        )  # fmt: skip
        await enqueue_deliveries(conn, run.org_id, events)
    await repo.finish_run(
        run.id,
        state="succeeded",
        watermark_received_at=max((r.received_at for r in data.reports), default=None),
        watermark_change_no=change_no,
        report_count=len(data.reports),
        results=results,
        alerts_raised=raised,
        alerts_updated=updated,
        code_version=code_version(),
    )
