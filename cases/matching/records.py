"""The records the matcher compares, one Struct per job. Storage maps its rows to these."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

__all__ = ["EntityKind", "EntityRecord", "IncidentRecord", "PersonRecord"]

EntityKind = Literal["employer", "agency", "sub_agent", "mention"]
Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]


class IncidentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One incident report, as far as deduplication needs it."""

    id: str
    occurred_at: datetime
    lat: Latitude | None = None
    lon: Longitude | None = None
    h3_cell: str | None = None  # used when the report carries a cell instead of a point
    categories: tuple[str, ...] = ()
    employer_ids: tuple[str, ...] = ()  # registry ids when already resolved
    employer_names: tuple[str, ...] = ()  # free text as the monitor wrote it
    narrative_tokens: tuple[str, ...] = ()
    monitor_id: str | None = None


class EntityRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A registry entity (employer, agency, sub-agent) or a free-text mention in a report."""

    id: str
    kind: EntityKind
    legal_name: str
    aliases: tuple[str, ...] = ()  # trade names and names in other scripts
    licence_numbers: tuple[str, ...] = ()
    registration: str | None = None
    phones: tuple[str, ...] = ()
    country: str | None = None  # ISO 3166 alpha-2; also the region hint for national phones
    address: str | None = None


class PersonRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A worker named in a report."""

    id: str
    name: str
    dob: date | None = None
    id_numbers: tuple[str, ...] = ()  # passport or national ID numbers
    phones: tuple[str, ...] = ()
    home_district: str | None = None
    country: str | None = None  # region hint for national phone formats
