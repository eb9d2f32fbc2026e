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
from collections.abc import AsyncIterator
from typing import Any

import h3
import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.response import Stream

from server.auth import ANY_STAFF, Caller, Principal, audit_staff, requires
from server.resources import Db, resources_of
from server.routes.case_filters import CaseFilters, provide_case_filters
from server.routes.case_problems import case_errors, case_view
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
    await audit_staff(
        db,
        principal,
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


@get(
    ["/v1/cases/export.csv", "/v1/cases/export.geojson"],
    guards=[requires(*ANY_STAFF)],
    tags=["cases"],
    summary="Export the filtered cases as csv or geojson (analysts: H3 cells, no titles)",
    dependencies={"filters": provide_case_filters},
)
async def export_cases(
    principal: Caller,
    db: Db,
    state: State,
    request: Request[Any, Any, Any],
    filters: CaseFilters,
) -> Response[Any]:
    fmt = "csv" if request.url.path.endswith(".csv") else "geojson"
    await _start(principal, db, fmt, filters)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    disposition = {"Content-Disposition": f'attachment; filename="cases-{stamp}.{fmt}"'}
    if fmt == "csv":
        return Stream(_csv(state, principal, filters), media_type="text/csv", headers=disposition)
    return Stream(
        _geojson(state, principal, filters), media_type="application/geo+json", headers=disposition
    )


ROUTES: list[Any] = [export_cases]
