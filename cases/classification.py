"""Which fields are sensitive, personal or operational, and what each staff role may see.

One table for the whole system: API views, exports, alerts and webhooks all pass records through
``view_for`` so a field's protection is decided here and nowhere else. Analysts never see who
reported or who was harmed, and see places only as H3 cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

import h3

from cases.accounts import Role

__all__ = [
    "ANALYST_CELL_RESOLUTION",
    "FIELD_CLASSES",
    "ROLE_CLASSES",
    "FieldClass",
    "coarse_cell",
    "view_for",
]


class FieldClass(StrEnum):
    SENSITIVE = "sensitive"  # identifies or endangers a worker or reporter
    PERSONAL = "personal"  # about a person, but needed to follow a case (e.g. exact place)
    OPERATIONAL = "operational"  # safe for analysis and aggregate reporting


# Dotted paths into a report view (and the parts of case, alert and person views built from it).
# Anything not listed is operational.
FIELD_CLASSES: Final[Mapping[str, FieldClass]] = {
    "report.worker": FieldClass.SENSITIVE,
    "report.location.place": FieldClass.SENSITIVE,
    "report.location.lat": FieldClass.PERSONAL,
    "report.location.lon": FieldClass.PERSONAL,
    "report.location.accuracy_m": FieldClass.PERSONAL,
    "report.narrative": FieldClass.PERSONAL,
    "report.consent": FieldClass.PERSONAL,
    "monitor_id": FieldClass.PERSONAL,
    "device_id": FieldClass.PERSONAL,
    "person_id": FieldClass.SENSITIVE,
    "attachments": FieldClass.PERSONAL,
}

ROLE_CLASSES: Final[Mapping[Role, frozenset[FieldClass]]] = {
    Role.CASE_MANAGER: frozenset(FieldClass),
    Role.ORG_ADMIN: frozenset({FieldClass.OPERATIONAL, FieldClass.PERSONAL}),
    Role.ANALYST: frozenset({FieldClass.OPERATIONAL}),
}

# About 5 km² cells: precise enough for district-level patterns, too coarse to find a dormitory.
ANALYST_CELL_RESOLUTION: Final = 7


def coarse_cell(lat: float, lon: float, resolution: int = ANALYST_CELL_RESOLUTION) -> str:
    return str(h3.latlng_to_cell(lat, lon, resolution))


def _drop(data: dict[str, Any], path: list[str]) -> None:
    head, *rest = path
    if head not in data:
        return
    if not rest:
        del data[head]
    elif isinstance(data[head], dict):
        inner = dict(data[head])
        _drop(inner, rest)
        data[head] = inner


def view_for(
    role: Role, record: Mapping[str, Any], *, cell_resolution: int = ANALYST_CELL_RESOLUTION
) -> dict[str, Any]:
    """A copy of ``record`` without the fields ``role`` may not see.

    When exact coordinates are withheld, ``report.location`` keeps an ``h3_cell`` instead.
    """
    allowed = ROLE_CLASSES[role]
    out = dict(record)
    location = (
        out.get("report", {}).get("location") if isinstance(out.get("report"), dict) else None
    )
    hide_coordinates = FieldClass.PERSONAL not in allowed
    for path, field_class in FIELD_CLASSES.items():
        if field_class not in allowed:
            _drop(out, path.split("."))
    if hide_coordinates and isinstance(location, dict) and "lat" in location and "lon" in location:
        report = dict(out["report"])
        report["location"] = {
            "h3_cell": coarse_cell(location["lat"], location["lon"], cell_resolution)
        }
        out["report"] = report
    return out
