"""The registry of employers, recruitment agencies and sub-agents, as the case team keeps it.

Identifiers are normalised on the way in (phones to E.164, licence and registration numbers to
upper-case alphanumerics) so that matching compares like with like; names keep their original
script, with aliases for other scripts and spellings.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import date
from enum import StrEnum
from typing import Annotated

import msgspec

from cases.matching.normalise import normalise_identifier, normalise_phone

__all__ = [
    "REGION_RESOLUTION",
    "EntityDraft",
    "EntityKind",
    "ImportProblem",
    "Licence",
    "LicenceStatus",
    "ParentRelation",
    "parse_licence_csv",
]

# Registry subsets travel to devices by H3 cell at this resolution (about 250 km² a cell) and by
# country; monitors' regions are expressed at the same resolution.
REGION_RESOLUTION = 5

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]


class EntityKind(StrEnum):
    EMPLOYER = "employer"
    RECRUITMENT_AGENCY = "recruitment_agency"
    SUB_AGENT = "sub_agent"


class ParentRelation(StrEnum):
    BRANCH_OF = "branch_of"  # an agency's branch office
    SUPPLIER_OF = "supplier_of"  # a supplier factory of a buyer brand
    SUBSIDIARY_OF = "subsidiary_of"


class LicenceStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    EXPIRED = "expired"


class Licence(msgspec.Struct, frozen=True, kw_only=True):
    number: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    issuing_authority: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    status: LicenceStatus = LicenceStatus.ACTIVE
    valid_until: date | None = None


class EntityDraft(msgspec.Struct, frozen=True, kw_only=True):
    """What a case manager (or an import) submits; normalised by ``normalised()``."""

    kind: EntityKind
    legal_name: Name
    aliases: Annotated[tuple[Name, ...], msgspec.Meta(max_length=100)] = ()
    licences: Annotated[tuple[Licence, ...], msgspec.Meta(max_length=20)] = ()
    registration_number: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    phones: Annotated[
        tuple[Annotated[str, msgspec.Meta(max_length=40)], ...], msgspec.Meta(max_length=20)
    ] = ()
    country: Country | None = None
    address: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    parent_id: uuid.UUID | None = None
    parent_relation: ParentRelation | None = None

    def normalised(self) -> EntityDraft:
        """Identifiers in canonical form; phones that cannot be read are kept out (not guessed)."""
        phones = tuple(
            dict.fromkeys(
                p for p in (normalise_phone(raw, self.country) for raw in self.phones) if p
            )
        )
        licences = tuple(
            msgspec.structs.replace(lic, number=normalise_identifier(lic.number))
            for lic in self.licences
            if normalise_identifier(lic.number)
        )
        registration = (
            normalise_identifier(self.registration_number) or None
            if self.registration_number
            else None
        )
        aliases = tuple(dict.fromkeys(a.strip() for a in self.aliases if a.strip()))
        return msgspec.structs.replace(
            self,
            legal_name=self.legal_name.strip(),
            aliases=aliases,
            phones=phones,
            licences=licences,
            registration_number=registration,
        )


class ImportProblem(msgspec.Struct, frozen=True):
    line: int
    message: str


_COLUMNS = ("licence_number", "issuing_authority", "legal_name")


def parse_licence_csv(text: str) -> Iterator[EntityDraft | ImportProblem]:
    """Rows of a licensing authority's list: one agency per licence.

    Required columns: licence_number, issuing_authority, legal_name. Optional: kind, status,
    valid_until (YYYY-MM-DD), country, address, phone (several separated by ';'),
    registration_number, aliases (';'-separated). A bad row is reported, never silently dropped.
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        yield ImportProblem(1, f"missing columns: {', '.join(missing)}")
        return
    for line, row in enumerate(reader, start=2):
        try:
            yield msgspec.convert(
                {
                    "kind": (row.get("kind") or "recruitment_agency").strip(),
                    "legal_name": (row.get("legal_name") or "").strip(),
                    "aliases": [a for a in (row.get("aliases") or "").split(";") if a.strip()],
                    "licences": [
                        {
                            "number": (row.get("licence_number") or "").strip(),
                            "issuing_authority": (row.get("issuing_authority") or "").strip(),
                            "status": (row.get("status") or "active").strip().lower(),
                            "valid_until": (row.get("valid_until") or "").strip() or None,
                        }
                    ],
                    "registration_number": (row.get("registration_number") or "").strip() or None,
                    "phones": [p for p in (row.get("phone") or "").split(";") if p.strip()],
                    "country": (row.get("country") or "").strip().upper() or None,
                    "address": (row.get("address") or "").strip() or None,
                },
                EntityDraft,
            ).normalised()
        except msgspec.ValidationError as exc:
            yield ImportProblem(line, str(exc))
