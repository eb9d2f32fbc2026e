"""Alerts: raised from scan findings above the organisation's threshold, updated in place when a
cluster continues (lineage, with every state kept in ``alert_versions``), and moved through
their lifecycle by analysts. ``AlertView`` is the one payload analysts, webhooks and the live
stream receive: member reports by id, places as H3 cells, no reporter or worker identity."""

from __future__ import annotations

import statistics
import uuid
from collections import Counter
from datetime import date, datetime
from typing import Any, Literal

import asyncpg
import msgspec

from storage.audit import ActorKind, AuditEntry, record
from storage.case_links import create_case
from storage.cases import CaseActor
from storage.db import Conn
from storage.errors import NotFound, StaleVersion, StorageError
from storage.queries import Q
from storage.risk_scan import Finding, ScanData, analyst_cells, group_by_entity

__all__ = [
    "CHANNEL",
    "TRANSITIONS",
    "AlertStatus",
    "AlertView",
    "IllegalTransition",
    "alert_history",
    "alert_view",
    "alertable",
    "get_alert",
    "list_alerts",
    "precision",
    "quality_of",
    "record_findings",
    "set_verdict",
    "transition",
]

AlertStatus = Literal["new", "acknowledged", "escalated", "dismissed"]
Verdict = Literal["true_alarm", "false_alarm"]

TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"acknowledged", "escalated", "dismissed"}),
    "acknowledged": frozenset({"escalated", "dismissed"}),
    "escalated": frozenset(),  # a case owns it now; the verdict can still be recorded
    "dismissed": frozenset({"acknowledged"}),  # reopened by an analyst who changed their mind
}

CHANNEL = "fairwatch_alerts"
# Data-quality thresholds: above these shares a flag is raised for the analyst.
SINGLE_SOURCE_SHARE = 0.6
IMPRECISE_ACCURACY_M = 1000.0
IMPRECISE_SHARE = 0.25
# Reports from one device received within the same minute count as one upload batch.
BATCH_SECONDS = 60


class IllegalTransition(StorageError):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"an alert that is {current} cannot become {target}")
        self.current = current
        self.target = target


class AlertView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    kind: Literal["space_time", "entity_surge"]
    scope: str
    categories: list[str]
    status: AlertStatus
    version: int
    cells: list[str]
    centre_cell: str | None
    radius_km: float | None
    countries: list[str]
    entity: dict[str, Any] | None
    window_start: date
    window_end: date
    observed: int
    expected: float
    ratio: float
    llr: float
    p_value: float
    replicas: int
    recurrence_interval_days: float
    member_report_ids: list[uuid.UUID]
    linked_entities: list[dict[str, Any]]
    quality: dict[str, Any]
    method: str
    params: dict[str, Any]
    seed: int
    code_version: str
    first_run_id: uuid.UUID
    last_run_id: uuid.UUID
    case_id: uuid.UUID | None
    dismiss_reason: str | None
    verdict: Verdict | None
    verdict_note: str | None
    created_at: datetime
    updated_at: datetime
    # The scan's own figures beside the run-level ones above (p_value, recurrence_interval_days:
    # Bonferroni over the scans_in_run scans of the run). None on alerts raised before the
    # run-level adjustment, whose p_value is the scan's own.
    scan_p_value: float | None = None
    scan_recurrence_interval_days: float | None = None
    scans_in_run: int | None = None


def alert_view(row: asyncpg.Record) -> AlertView:
    entity = row["entity"]
    return AlertView(
        id=row["id"],
        kind=row["kind"],
        scope=row["scope"],
        categories=list(row["categories"]),
        status=row["status"],
        version=row["version"],
        cells=list(row["cells"]),
        centre_cell=row["centre_cell"],
        radius_km=row["radius_km"],
        countries=list(row["countries"]),
        entity=None if entity is None else msgspec.json.decode(entity),
        window_start=row["window_start"],
        window_end=row["window_end"],
        observed=row["observed"],
        expected=row["expected"],
        ratio=row["ratio"],
        llr=row["llr"],
        p_value=row["p_value"],
        replicas=row["replicas"],
        recurrence_interval_days=row["recurrence_interval_days"],
        member_report_ids=list(row["member_report_ids"]),
        linked_entities=msgspec.json.decode(row["linked_entities"]),
        quality=msgspec.json.decode(row["quality"]),
        method=row["method"],
        params=msgspec.json.decode(row["params"]),
        seed=row["seed"],
        code_version=row["code_version"],
        first_run_id=row["first_run_id"],
        last_run_id=row["last_run_id"],
        case_id=row["case_id"],
        dismiss_reason=row["dismiss_reason"],
        verdict=row["verdict"],
        verdict_note=row["verdict_note"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        scan_p_value=row["scan_p_value"],
        scan_recurrence_interval_days=row["scan_recurrence_interval_days"],
        scans_in_run=row["scans_in_run"],
    )


def quality_of(
    data: ScanData, members: list[int], incident_of: dict[uuid.UUID, uuid.UUID]
) -> dict[str, Any]:
    """Data-quality flags of a cluster: one source dominating, one upload batch, duplicates of
    one incident, imprecise coordinates. Shares only: no monitor or device is named."""
    reports = [data.reports[i] for i in members]
    n = max(len(reports), 1)
    by_monitor = Counter(r.monitor_id for r in reports)
    by_batch = Counter(
        (r.device_id, int(r.received_at.timestamp()) // BATCH_SECONDS) for r in reports
    )
    by_incident = Counter(incident_of[r.id] for r in reports if r.id in incident_of)
    duplicates = sum(c - 1 for c in by_incident.values() if c > 1)
    accuracies = [r.accuracy_m for r in reports if r.accuracy_m is not None]
    imprecise = sum(1 for a in accuracies if a > IMPRECISE_ACCURACY_M) + n - len(accuracies)
    quality: dict[str, Any] = {
        "reports": len(reports),
        "monitors": len(by_monitor),
        "top_monitor_share": max(by_monitor.values(), default=0) / n,
        "top_device_batch_share": max(by_batch.values(), default=0) / n,
        "duplicate_members": duplicates,
        "distinct_incidents": len(reports) - duplicates,
        "imprecise_location_share": imprecise / n if reports else 0.0,
        "median_accuracy_m": statistics.median(accuracies) if accuracies else None,
    }
    flags = []
    if quality["top_monitor_share"] >= SINGLE_SOURCE_SHARE:
        flags.append("single_monitor_dominates")
    if quality["top_device_batch_share"] >= SINGLE_SOURCE_SHARE and len(reports) >= 3:
        flags.append("single_upload_batch")
    if duplicates:
        flags.append("duplicate_reports")
    if quality["imprecise_location_share"] >= IMPRECISE_SHARE:
        flags.append("imprecise_locations")
    quality["flags"] = flags
    return quality


async def _snapshot(
    conn: Conn,
    org_id: uuid.UUID,
    alert_id: uuid.UUID,
    event: str,
    *,
    run_id: uuid.UUID | None = None,
    actor_id: uuid.UUID | None = None,
) -> AlertView:
    row = await conn.fetchrow(Q.get_alert, org_id, alert_id)
    assert row is not None
    view = alert_view(row)
    await conn.execute(
        Q.insert_alert_version,
        alert_id,
        org_id,
        view.version,
        event,
        run_id,
        actor_id,
        msgspec.json.encode(view).decode(),
    )
    await conn.execute(Q.notify_alerts, str(org_id))
    return view


def _overlaps(path: list[uuid.UUID], node: uuid.UUID, taken: list[list[uuid.UUID]]) -> bool:
    return any(node in other or other[-1] in path for other in taken)


def alertable(findings: list[Finding], threshold_days: float) -> list[Finding]:
    """The findings whose run-level (family-wise) recurrence interval reaches the threshold,
    rarest first. A scan's own recurrence interval is not enough: a run makes several scans."""
    eligible = [
        f
        for f in findings
        if f.recurrence_interval_days is not None and f.recurrence_interval_days >= threshold_days
    ]
    eligible.sort(key=lambda f: (-(f.recurrence_interval_days or 0.0), -f.llr))
    return eligible


async def record_findings(
    conn: Conn,
    org_id: uuid.UUID,
    run_id: uuid.UUID,
    data: ScanData,
    findings: list[Finding],
    *,
    params: dict[str, Any],
    seed: int,
    code_version: str,
    threshold_days: float,
) -> tuple[list[tuple[AlertView, str]], int, int]:
    """Raise or update alerts for the ``alertable`` findings, in the caller's transaction.
    Returns the (alert, event) pairs to deliver and the raised/updated counts."""
    eligible = alertable(findings, threshold_days)
    if not eligible:
        return [], 0, 0
    await conn.execute(Q.lock_org_alerts, str(org_id))
    member_ids = list({data.reports[i].id for f in eligible for i in f.members})
    incident_of = {
        r["report_id"]: r["incident_id"]
        for r in await conn.fetch(Q.risk_incident_of_reports, org_id, member_ids)
    }
    touched: list[uuid.UUID] = []
    surge_paths: dict[tuple[str, str | None], list[list[uuid.UUID]]] = {}
    events: list[tuple[AlertView, str]] = []
    raised = updated = 0
    for f in eligible:
        if f.kind == "entity_surge":
            # One alert per branch of the tree per run: a parent group that is significant only
            # because of one child's surge is the same signal.
            assert f.entity_id is not None
            taken = surge_paths.setdefault((f.scope.key, f.role), [])
            if _overlaps(f.entity_path, f.entity_id, taken):
                continue
            taken.append(f.entity_path)
        existing = await _continuing(conn, org_id, f, touched)
        c = _columns(data, f, incident_of)
        members = [data.reports[i].id for i in f.members]
        statistics_ = (
            f.observed, f.expected, f.ratio, f.llr, f.p_value, f.replicas,
            f.recurrence_interval_days, members, c.linked_entities,
        )  # fmt: skip
        family = (f.scan_p_value, f.scan_recurrence_interval_days, f.scans_in_run)
        params_json = msgspec.json.encode(params).decode()
        if existing is None:
            alert_id = await conn.fetchval(
                Q.insert_alert, org_id, f.kind, f.scope.key, c.categories, c.cells,
                c.centre_cell, f.radius_km, c.countries, f.role, f.entity_id, f.entity_path,
                c.entity, f.window_start, f.window_end, *statistics_, f.method, params_json,
                seed, code_version, c.quality, run_id, *family,
            )  # fmt: skip
            raised += 1
            event = "alert.created"
        else:
            alert_id = existing
            await conn.fetchval(
                Q.update_alert_statistics, org_id, alert_id, c.categories, c.cells,
                c.centre_cell, f.radius_km, c.countries, f.entity_id, f.entity_path, c.entity,
                f.window_start, f.window_end, *statistics_, params_json, seed, code_version,
                c.quality, run_id, *family,
            )  # fmt: skip
            updated += 1
            event = "alert.updated"
        touched.append(alert_id)
        events.append((await _snapshot(conn, org_id, alert_id, event, run_id=run_id), event))
    return events, raised, updated


async def _continuing(
    conn: Conn, org_id: uuid.UUID, f: Finding, touched: list[uuid.UUID]
) -> uuid.UUID | None:
    if f.kind == "space_time":
        found: uuid.UUID | None = await conn.fetchval(
            Q.find_continuing_space_time_alert, org_id, f.scope.key, analyst_cells(f.cells),
            f.window_start, f.window_end, touched,
        )  # fmt: skip
        return found
    surge: uuid.UUID | None = await conn.fetchval(
        Q.find_continuing_surge_alert, org_id, f.scope.key, f.role, f.entity_path, f.entity_id,
        f.window_start, f.window_end, touched,
    )  # fmt: skip
    return surge


class _Columns(msgspec.Struct, frozen=True):
    categories: list[str]
    cells: list[str]
    centre_cell: str | None
    countries: list[str]
    entity: str | None
    linked_entities: str
    quality: str


def _columns(data: ScanData, f: Finding, incident_of: dict[uuid.UUID, uuid.UUID]) -> _Columns:
    cats: set[str] = set()
    for i in f.members:
        cats.update(data.reports[i].categories)
    if f.scope.categories is not None:
        cats &= f.scope.categories
    entity = None
    if f.entity_id is not None:
        node = data.entities[f.entity_id]
        entity = {
            "role": f.role,
            "id": str(node.id),
            "name": node.name,
            "kind": node.kind,
            "path": [
                {"id": str(e), "name": data.entities[e].name, "kind": data.entities[e].kind}
                for e in f.entity_path
            ],
        }
    return _Columns(
        categories=sorted(cats),
        cells=analyst_cells(f.cells),
        centre_cell=analyst_cells([f.centre_cell])[0] if f.centre_cell else None,
        countries=sorted({c for i in f.members if (c := data.reports[i].country)}),
        entity=None if entity is None else msgspec.json.encode(entity).decode(),
        linked_entities=msgspec.json.encode(group_by_entity(data, f.members)).decode(),
        quality=msgspec.json.encode(quality_of(data, f.members, incident_of)).decode(),
    )


async def get_alert(conn: Conn, org_id: uuid.UUID, alert_id: uuid.UUID) -> AlertView:
    row = await conn.fetchrow(Q.get_alert, org_id, alert_id)
    if row is None:
        raise NotFound("alert", alert_id)
    return alert_view(row)


async def list_alerts(
    conn: Conn,
    org_id: uuid.UUID,
    *,
    status: str | None,
    kind: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[AlertView]:
    at, last = after if after else (None, None)
    rows = await conn.fetch(Q.list_alerts, org_id, status, kind, at, last, limit)
    return [alert_view(r) for r in rows]


async def alert_history(conn: Conn, org_id: uuid.UUID, alert_id: uuid.UUID) -> list[dict[str, Any]]:
    await get_alert(conn, org_id, alert_id)
    return [
        {
            "version": r["version"],
            "event": r["event"],
            "run_id": r["run_id"],
            "at": r["created_at"],
            "alert": msgspec.json.decode(r["snapshot"]),
        }
        for r in await conn.fetch(Q.list_alert_versions, org_id, alert_id)
    ]


async def transition(
    conn: Conn,
    org_id: uuid.UUID,
    alert_id: uuid.UUID,
    target: AlertStatus,
    actor_id: uuid.UUID,
    *,
    reason: str | None = None,
    case_id: uuid.UUID | None = None,
    expected_version: int | None = None,
) -> AlertView:
    """Move an alert to ``target`` (audited, versioned, streamed) in one transaction."""
    async with conn.transaction():
        row = await conn.fetchrow(Q.get_alert_for_update, org_id, alert_id)
        if row is None:
            raise NotFound("alert", alert_id)
        if expected_version is not None and row["version"] != expected_version:
            raise StaleVersion("alert", alert_id, row["version"])
        if target not in TRANSITIONS[row["status"]]:
            raise IllegalTransition(row["status"], target)
        if case_id is not None and not await conn.fetchval(Q.case_in_org, org_id, case_id):
            raise NotFound("case", case_id)  # never link another organisation's case
        if target == "escalated" and case_id is None:
            case_id = await _case_for_alert(conn, org_id, alert_id, row, actor_id)
        await conn.execute(
            Q.set_alert_status, org_id, alert_id, target,
            reason if target == "dismissed" else None, case_id, actor_id,
        )  # fmt: skip
        detail: dict[str, Any] = {"from": row["status"], "to": target}
        if case_id is not None:
            detail["case_id"] = str(case_id)
        await record(
            conn,
            AuditEntry(
                org_id=org_id,
                actor_kind=ActorKind.STAFF,
                actor_id=str(actor_id),
                action=f"alert.{target}",
                object_kind="alert",
                object_id=str(alert_id),
                detail=detail,
            ),
        )
        return await _snapshot(conn, org_id, alert_id, f"alert.{target}", actor_id=actor_id)


async def _case_for_alert(
    conn: Conn, org_id: uuid.UUID, alert_id: uuid.UUID, row: Any, actor_id: uuid.UUID
) -> uuid.UUID | None:
    """Escalating without naming a case opens one for the alert's reports that no case follows;
    if every report is already followed, the alert goes to the case holding most of them."""
    members = list(row["member_report_ids"])
    followed = {
        r["report_id"]: r["case_id"] for r in await conn.fetch(Q.cases_of_reports, org_id, members)
    }
    free = [m for m in members if m not in followed]
    if free:
        case = await create_case(
            conn,
            org_id=org_id,
            actor=CaseActor.staff(actor_id, supervisor=False),
            report_ids=free,
            title=f"Risk alert {alert_id}",
        )
        if case is not None:
            return case.id
    if followed:
        counts: dict[uuid.UUID, int] = {}
        for case_id in followed.values():
            counts[case_id] = counts.get(case_id, 0) + 1
        return max(counts, key=lambda c: counts[c])
    return None


async def set_verdict(
    conn: Conn,
    org_id: uuid.UUID,
    alert_id: uuid.UUID,
    verdict: Verdict,
    note: str | None,
    actor_id: uuid.UUID,
) -> AlertView:
    """The analyst's judgement (true or false alarm), kept to measure the scan's precision."""
    async with conn.transaction():
        if (
            await conn.fetchval(Q.set_alert_verdict, org_id, alert_id, verdict, note, actor_id)
            is None
        ):
            raise NotFound("alert", alert_id)
        await record(
            conn,
            AuditEntry(
                org_id=org_id,
                actor_kind=ActorKind.STAFF,
                actor_id=str(actor_id),
                action="alert.verdict",
                object_kind="alert",
                object_id=str(alert_id),
                detail={"verdict": verdict},
            ),
        )
        return await _snapshot(conn, org_id, alert_id, "alert.verdict", actor_id=actor_id)


async def precision(conn: Conn, org_id: uuid.UUID) -> list[dict[str, Any]]:
    out = []
    for r in await conn.fetch(Q.alert_precision, org_id):
        judged = r["true_alarms"] + r["false_alarms"]
        out.append(
            {
                "kind": r["kind"],
                "true_alarms": r["true_alarms"],
                "false_alarms": r["false_alarms"],
                "unjudged": r["unjudged"],
                "precision": r["true_alarms"] / judged if judged else None,
            }
        )
    return out
