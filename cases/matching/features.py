"""Records prepared for matching: every value normalised once, when the record enters the
index, so that comparing a pair does no parsing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from itertools import combinations

import h3
import msgspec

from cases.matching.normalise import (
    OrgName,
    PersonName,
    normalise_identifier,
    normalise_org_name,
    normalise_person_name,
    normalise_phone,
    phone_subscriber,
    to_latin,
)
from cases.matching.phonetic import phonetic_code
from cases.matching.records import EntityRecord, IncidentRecord, PersonRecord

__all__ = [
    "EntityFeatures",
    "IncidentFeatures",
    "PersonFeatures",
    "prepare_entity",
    "prepare_incident",
    "prepare_person",
    "sound_pairs",
    "sound_set",
    "sound_sets",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class IncidentFeatures(msgspec.Struct, frozen=True):
    id: str
    occurred_at: datetime
    day: int  # days since the epoch, UTC
    point: tuple[float, float] | None
    cell: str | None  # H3 cell at the blocking resolution
    categories: frozenset[str]
    employer_ids: frozenset[str]
    employer_names: tuple[OrgName, ...]
    narrative_tokens: frozenset[str]
    monitor_id: str | None


class EntityFeatures(msgspec.Struct, frozen=True):
    id: str
    kind: str
    names: tuple[OrgName, ...]  # legal name first, then aliases
    licences: frozenset[str]
    registration: frozenset[str]
    phones: frozenset[str]
    country: str | None
    legal_form: str | None


class PersonFeatures(msgspec.Struct, frozen=True):
    id: str
    name: PersonName
    codes: dict[str, str]  # token -> phonetic code
    dob: date | None
    id_numbers: frozenset[str]
    phones: frozenset[str]
    district: str | None


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def prepare_incident(record: IncidentRecord, resolution: int) -> IncidentFeatures:
    occurred = _as_utc(record.occurred_at)
    point: tuple[float, float] | None = None
    cell: str | None = None
    if record.lat is not None and record.lon is not None:
        point = (record.lat, record.lon)
        cell = h3.latlng_to_cell(record.lat, record.lon, resolution)
    elif record.h3_cell:
        lat, lon = h3.cell_to_latlng(record.h3_cell)
        point = (float(lat), float(lon))
        native = h3.get_resolution(record.h3_cell)
        cell = (
            h3.cell_to_parent(record.h3_cell, resolution)
            if native > resolution
            else h3.latlng_to_cell(lat, lon, resolution)
        )
    return IncidentFeatures(
        id=record.id,
        occurred_at=occurred,
        day=(occurred - _EPOCH).days,
        point=point,
        cell=cell,
        categories=frozenset(record.categories),
        employer_ids=frozenset(record.employer_ids),
        employer_names=tuple(normalise_org_name(n) for n in record.employer_names if n.strip()),
        narrative_tokens=frozenset(t.lower() for t in record.narrative_tokens),
        monitor_id=record.monitor_id,
    )


def _phones(raw: tuple[str, ...], region: str | None) -> frozenset[str]:
    # A national number without a region hint cannot be put in E.164 form; its subscriber
    # digits still recognise the same phone ("0812 148693" in a mention with no country).
    normalised = (normalise_phone(p, region) or phone_subscriber(p) for p in raw)
    return frozenset(p for p in normalised if p)


def _identifiers(raw: tuple[str, ...] | list[str]) -> frozenset[str]:
    return frozenset(i for i in (normalise_identifier(r) for r in raw) if i)


def prepare_entity(record: EntityRecord, default_region: str | None = None) -> EntityFeatures:
    names = tuple(
        normalise_org_name(n) for n in (record.legal_name, *record.aliases) if n and n.strip()
    )
    forms = [n.legal_form for n in names if n.legal_form]
    return EntityFeatures(
        id=record.id,
        kind=record.kind,
        names=names,
        licences=_identifiers(record.licence_numbers),
        registration=_identifiers([record.registration] if record.registration else []),
        phones=_phones(record.phones, record.country or default_region),
        country=record.country.upper() if record.country else None,
        legal_form=forms[0] if forms else None,
    )


def prepare_person(record: PersonRecord, default_region: str | None = None) -> PersonFeatures:
    name = normalise_person_name(record.name)
    district = " ".join(to_latin(record.home_district).split()) if record.home_district else ""
    return PersonFeatures(
        id=record.id,
        name=name,
        codes={t: phonetic_code(t) for t in name.tokens},
        dob=record.dob,
        id_numbers=_identifiers(record.id_numbers),
        phones=_phones(record.phones, record.country or default_region),
        district=district or None,
    )


def sound_pairs(codes: Iterable[str]) -> set[str]:
    """Every pair of a name's phonetic codes, order-free: how namesakes are counted and
    blocked ("Ram ... Gurung" whatever the middle name and the spelling)."""
    unique = sorted({code for code in codes if code})
    return {f"{x}|{y}" for x, y in combinations(unique, 2)}


_MAX_SOUNDS_COUNTED = 6  # a longer name counts its first six sounds (57 sets at most)


def _counted_sounds(codes: Iterable[str]) -> list[str]:
    return sorted({code for code in codes if code})[:_MAX_SOUNDS_COUNTED]


def sound_sets(codes: Iterable[str]) -> set[str]:
    """Every set of two or more of a name's phonetic codes, order-free: how the namesakes of
    a whole name are counted, inside longer names too ("Ram Gurung" in "Ram Bahadur
    Gurung")."""
    unique = _counted_sounds(codes)
    return {
        "|".join(subset)
        for size in range(2, len(unique) + 1)
        for subset in combinations(unique, size)
    }


def sound_set(codes: Iterable[str]) -> str | None:
    """The set of all of a name's phonetic codes, as `sound_sets` counts it (None for fewer
    than two)."""
    unique = _counted_sounds(codes)
    return "|".join(unique) if len(unique) > 1 else None
