"""Seeded report data for the risk tests: background reports spread over a city and a month or
two, plus an injected cluster (one place, the last few days, several monitors) whose reports
also name one recruitment-agency branch. Written straight to the database (the sync path has
its own tests), so a test controls every date."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from typing import Any

import h3
import msgspec
import pytest

from storage.db import Conn

__all__ = [
    "CLUSTER_POINT",
    "IDENTIFYING_KEYS",
    "Seeded",
    "add_cluster_reports",
    "cluster_cell",
    "json_keys",
    "seed_reports",
]

pytestmark = pytest.mark.db

CITY = (25.2854, 51.5310)  # Doha
CLUSTER_POINT = (25.3200, 51.4400)
# Keys that would identify a reporter or a place too precisely: never in analyst payloads.
IDENTIFYING_KEYS = {"lat", "lon", "latitude", "longitude", "monitor_id", "device_id", "worker"}
BACKGROUND_CATEGORIES = ["FR.RECRUITMENT_FEE", "FL.WAGE_WITHHOLDING", "FL.DOC_RETENTION"]


class Seeded(msgspec.Struct):
    org_id: uuid.UUID
    analysis_date: dt.date
    monitors: list[uuid.UUID]
    background: list[uuid.UUID]
    cluster: list[uuid.UUID]
    branch_id: uuid.UUID
    agency_id: uuid.UUID
    max_received_at: dt.datetime


def _at(day: dt.date, minutes: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(1, 0), dt.UTC) + dt.timedelta(minutes=minutes)


async def _insert_report(
    conn: Conn,
    org_id: uuid.UUID,
    monitor_id: uuid.UUID,
    point: tuple[float, float],
    occurred: dt.datetime,
    categories: list[str],
    *,
    device_id: uuid.UUID | None = None,
    accuracy_m: float = 15.0,
) -> tuple[uuid.UUID, dt.datetime]:
    report_id = uuid.uuid4()
    received = occurred + dt.timedelta(minutes=30)
    content = {
        "location": {"lat": point[0], "lon": point[1], "accuracy_m": accuracy_m},
        "categories": categories,
        "destination_country": "QA",
    }
    await conn.execute(
        "INSERT INTO reports (id, org_id, monitor_id, device_id, version, content, occurred_at,"
        " latitude, longitude, categories, recorded_at, received_at)"
        " VALUES ($1, $2, $3, $4, 1, $5::jsonb, $6, $7, $8, $9, $6, $10)",
        report_id, org_id, monitor_id, device_id or uuid.uuid4(), json.dumps(content), occurred,
        point[0], point[1], categories, received,
    )  # fmt: skip
    return report_id, received


async def _entity(
    conn: Conn, org_id: uuid.UUID, name: str, parent: uuid.UUID | None = None
) -> uuid.UUID:
    kind = "recruitment_agency" if parent is None else "sub_agent"
    entity_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO entities (org_id, kind, legal_name, parent_id, parent_relation)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
        org_id, kind, name, parent, None if parent is None else "branch_of",
    )  # fmt: skip
    return entity_id


async def _link(conn: Conn, org_id: uuid.UUID, report_id: uuid.UUID, entity: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO entity_links (report_id, role, org_id, entity_id)"
        " VALUES ($1, 'recruiter', $2, $3)",
        report_id,
        org_id,
        entity,
    )


async def seed_reports(
    conn: Conn,
    org_id: uuid.UUID,
    *,
    analysis_date: dt.date | None = None,
    study_days: int = 60,
    background: int = 240,
    cluster: int = 14,
    cluster_days: int = 3,
    seed: int = 7,
) -> Seeded:
    rng = random.Random(seed)
    day0 = analysis_date or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    # Places: 30 points within about 8 km of the centre (most fall in distinct H3 cells).
    points = [
        (CITY[0] + rng.uniform(-0.07, 0.07), CITY[1] + rng.uniform(-0.07, 0.07)) for _ in range(30)
    ]
    async with conn.transaction():
        monitors = [
            await conn.fetchval(
                "INSERT INTO monitors (org_id, display_name) VALUES ($1, $2) RETURNING id",
                org_id,
                f"Monitor {k}",
            )
            for k in range(8)
        ]
        agency = await _entity(conn, org_id, "Gulf Star Manpower")
        branch = await _entity(conn, org_id, "Gulf Star Manpower, Kathmandu branch", agency)
        others = [await _entity(conn, org_id, f"Agency {k}") for k in range(6)]
        background_ids, cluster_ids, received = [], [], []
        for _ in range(background):
            day = day0 - dt.timedelta(days=rng.randrange(study_days))
            rid, at = await _insert_report(
                conn, org_id, rng.choice(monitors), rng.choice(points),
                _at(day, rng.randrange(600)), [rng.choice(BACKGROUND_CATEGORIES)],
            )  # fmt: skip
            background_ids.append(rid)
            received.append(at)
            if rng.random() < 0.5:
                await _link(conn, org_id, rid, rng.choice([*others, agency]))
        for k in range(cluster):
            day = day0 - dt.timedelta(days=k % cluster_days)
            rid, at = await _insert_report(
                conn, org_id, monitors[k % 4], CLUSTER_POINT, _at(day, 10 * k),
                ["FL.DOC_RETENTION", "FL.THREATS"],
            )  # fmt: skip
            cluster_ids.append(rid)
            received.append(at)
            await _link(conn, org_id, rid, branch)
    return Seeded(
        org_id=org_id,
        analysis_date=day0,
        monitors=monitors,
        background=background_ids,
        cluster=cluster_ids,
        branch_id=branch,
        agency_id=agency,
        max_received_at=max(received),
    )


async def add_cluster_reports(
    conn: Conn, seeded: Seeded, day: dt.date, count: int
) -> list[uuid.UUID]:
    """More reports of the injected cluster on ``day`` (a continuing cluster)."""
    ids = []
    async with conn.transaction():
        for k in range(count):
            rid, _ = await _insert_report(
                conn, seeded.org_id, seeded.monitors[k % 4], CLUSTER_POINT, _at(day, 7 * k),
                ["FL.DOC_RETENTION"],
            )  # fmt: skip
            await _link(conn, seeded.org_id, rid, seeded.branch_id)
            ids.append(rid)
    return ids


def json_keys(value: Any) -> set[str]:
    """Every key anywhere in a decoded JSON document."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in json_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in json_keys(v)}
    return set()


def cluster_cell(resolution: int = 7) -> str:
    return str(h3.latlng_to_cell(CLUSTER_POINT[0], CLUSTER_POINT[1], resolution))


async def test_seeded_cluster_is_local_and_recent(db: Conn) -> None:
    org_id = await db.fetchval(
        "INSERT INTO orgs (slug, name) VALUES ($1, 'Seed check') RETURNING id",
        f"seed-{uuid.uuid4().hex[:8]}",
    )
    seeded = await seed_reports(db, org_id, background=20, cluster=6)
    rows = await db.fetch(
        "SELECT latitude, longitude, occurred_at, received_at FROM reports"
        " WHERE id = ANY($1::uuid[])",
        seeded.cluster,
    )
    assert len(rows) == 6
    assert {(r["latitude"], r["longitude"]) for r in rows} == {CLUSTER_POINT}
    assert all(seeded.analysis_date - r["occurred_at"].date() < dt.timedelta(days=3) for r in rows)
    assert all(r["received_at"] <= seeded.max_received_at for r in rows)
