"""Case exports as CSV and GeoJSON, with the list's filters, seen through the caller's role.

Analysts get H3 cells instead of coordinates (as a polygon in GeoJSON) and no titles. Every
export is audited before the first byte leaves, with its filters. Rows are streamed a keyset page
at a time on a connection of the export's own, so an export of every case never sits in memory.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import h3
import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from cases.priority import Priority
from cases.workflow import CaseStatus
from server.auth import ANY_STAFF, Caller, Principal, requires
from server.resources import Db, resources_of
from server.routes.case_problems import case_errors, case_view
from storage.audit import record_staff
from storage.case_list import CaseFilter, CaseSort, iterate_cases, list_cases
from storage.retention import analyst_cell_resolution

__all__ = ["CSV_COLUMNS", "ROUTES"]

CSV_COLUMNS = (
    "number",
    "id",
    "title",
    "status",
    "priority",
    "assignee_id",
    "created_at",
    "updated_at",
    "due_at",
    "overdue",
    "categories",
    "report_count",
    "occurred_from",
    "occurred_to",
    "latitude",
    "longitude",
    "h3_cell",
)


async def _start(principal: Principal, db: Db, fmt: str, filters: CaseFilter) -> None:
    with case_errors():
        await list_cases(db, principal.org_id, filters, limit=1)  # refuse bad filters before 200
    await record_staff(
        db,
        principal.org_id,
        principal.user_id,
        "case.export",
        "cases",
        format=fmt,
        role=principal.role.value,
        filters=msgspec.to_builtins(filters),
    )


async def _views(
    state: State, principal: Principal, f: CaseFilter
) -> AsyncIterator[dict[str, Any]]:
    async with (
        resources_of(state).pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        resolution = await analyst_cell_resolution(conn, principal.org_id)
        async for item in iterate_cases(conn, principal.org_id, f, sort=CaseSort.CREATED):
            yield case_view(principal.role, msgspec.to_builtins(item), resolution)


def _csv_line(values: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue().encode()


async def _csv(state: State, principal: Principal, f: CaseFilter) -> AsyncIterator[bytes]:
    yield _csv_line(list(CSV_COLUMNS))
    async for view in _views(state, principal, f):
        location = view.get("location") or {}
        row = {
            **view,
            "latitude": location.get("lat"),
            "longitude": location.get("lon"),
            "h3_cell": location.get("h3_cell"),
        }
        row["categories"] = " ".join(view.get("categories") or [])
        yield _csv_line(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])


def _geometry(location: dict[str, Any] | None) -> dict[str, Any] | None:
    if not location:
        return None
    if "h3_cell" in location:
        ring = [[lon, lat] for lat, lon in h3.cell_to_boundary(location["h3_cell"])]
        return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    return {"type": "Point", "coordinates": [location["lon"], location["lat"]]}


async def _geojson(state: State, principal: Principal, f: CaseFilter) -> AsyncIterator[bytes]:
    yield b'{"type":"FeatureCollection","features":['
    first = True
    async for view in _views(state, principal, f):
        geometry = _geometry(view.pop("location", None))
        feature = {"type": "Feature", "id": view["id"], "geometry": geometry, "properties": view}
        yield (b"" if first else b",") + json.dumps(feature, default=str).encode()
        first = False
    yield b"]}"


def _filters(
    status: list[CaseStatus] | None,
    priority: list[Priority] | None,
    assignee_id: uuid.UUID | None,
    category: list[str] | None,
    entity_id: uuid.UUID | None,
    cell: str | None,
    created_from: dt.datetime | None,
    created_to: dt.datetime | None,
    overdue: bool | None,
    q: str | None,
) -> CaseFilter:
    return CaseFilter(
        status=tuple(status or ()),
        priority=tuple(priority or ()),
        assignee_id=assignee_id,
        categories=tuple(category or ()),
        entity_id=entity_id,
        cell=cell,
        created_from=created_from,
        created_to=created_to,
        overdue=overdue,
        text=q,
    )


@get(
    ["/v1/cases/export.csv", "/v1/cases/export.geojson"],
    guards=[requires(*ANY_STAFF)],
    tags=["cases"],
    summary="Export the filtered cases as csv or geojson (analysts: H3 cells, no titles)",
)
async def export_cases(
    principal: Caller,
    db: Db,
    state: State,
    request: Request[Any, Any, Any],
    status: FromQuery[list[CaseStatus] | None] = None,
    priority: FromQuery[list[Priority] | None] = None,
    assignee_id: FromQuery[uuid.UUID | None] = None,
    category: FromQuery[list[str] | None] = None,
    entity_id: FromQuery[uuid.UUID | None] = None,
    cell: Annotated[str | None, QueryParameter(max_length=20)] = None,
    created_from: FromQuery[dt.datetime | None] = None,
    created_to: FromQuery[dt.datetime | None] = None,
    overdue: FromQuery[bool | None] = None,
    q: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Response[Any]:
    fmt = "csv" if request.url.path.endswith(".csv") else "geojson"
    f = _filters(
        status,
        priority,
        assignee_id,
        category,
        entity_id,
        cell,
        created_from,
        created_to,
        overdue,
        q,
    )
    await _start(principal, db, fmt, f)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    disposition = {"Content-Disposition": f'attachment; filename="cases-{stamp}.{fmt}"'}
    if fmt == "csv":
        return Stream(_csv(state, principal, f), media_type="text/csv", headers=disposition)
    return Stream(
        _geojson(state, principal, f), media_type="application/geo+json", headers=disposition
    )


ROUTES: list[Any] = [export_cases]
