"""The incident Report a community monitor records offline, as it travels on the wire and is stored.

Every limit lives in the type (``Annotated[..., Meta(...)]``) so a bad report is refused when it is
decoded, never half-way through being stored. Wire types gain fields only with defaults.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Final
from uuid import UUID

import msgspec
from msgspec import Meta

from cases.taxonomy import CATEGORY_CODE_PATTERN as TAXONOMY_CODE_PATTERN

__all__ = [
    "AMENDABLE_FIELDS",
    "CATEGORY_CODE_PATTERN",
    "MAX_ATTACHMENTS",
    "MAX_ATTACHMENT_BYTES",
    "MAX_CATEGORIES",
    "MAX_NARRATIVE_CHARS",
    "SENSITIVE_FIELDS",
    "CategoryCode",
    "Consent",
    "CountryCode",
    "DeclaredAttachment",
    "LanguageTag",
    "Latitude",
    "Location",
    "Longitude",
    "PartyReference",
    "Report",
    "ReportContent",
    "Sha256Hex",
    "TimePrecision",
    "WorkerIdentity",
]

MAX_CATEGORIES: Final = 20
MAX_ATTACHMENTS: Final = 20
MAX_NARRATIVE_CHARS: Final = 20_000
# Cheap phones record short videos at best; anything larger is almost certainly a mistake.
MAX_ATTACHMENT_BYTES: Final = 512 * 1024 * 1024
# Taxonomy codes, e.g. "FR.RECRUITMENT_FEE" (see cases/taxonomy.py for the catalogue).
CATEGORY_CODE_PATTERN: Final = TAXONOMY_CODE_PATTERN

# Meta(ge=..., le=...) also refuses NaN and infinities (a NaN fails every comparison).
Latitude = Annotated[float, Meta(ge=-90.0, le=90.0)]
Longitude = Annotated[float, Meta(ge=-180.0, le=180.0)]
CategoryCode = Annotated[str, Meta(min_length=2, max_length=64, pattern=CATEGORY_CODE_PATTERN)]
CountryCode = Annotated[str, Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
LanguageTag = Annotated[
    str, Meta(max_length=35, pattern=r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{1,8})*$", description="BCP 47")
]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$", description="lowercase hex sha256")]
MediaType = Annotated[
    str, Meta(max_length=127, pattern=r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
]
AwareDatetime = Annotated[dt.datetime, Meta(tz=True)]
ShortText = Annotated[str, Meta(max_length=200)]
Phone = Annotated[str, Meta(max_length=40)]
Address = Annotated[str, Meta(max_length=500)]


class TimePrecision(enum.StrEnum):
    """How precisely the monitor knows when the incident happened."""

    EXACT = "exact"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class ReportContent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base for report parts: immutable, and defaults left off the wire so hashes stay stable."""


class Location(ReportContent, frozen=True, kw_only=True):
    """Where the incident happened, as the phone's GPS (or the monitor) placed it."""

    lat: Latitude
    lon: Longitude
    accuracy_m: Annotated[float, Meta(ge=0.0, le=1_000_000.0)] | None = None
    place: Annotated[str, Meta(max_length=500)] | None = None


class PartyReference(ReportContent, frozen=True, kw_only=True):
    """An employer or recruiter as the monitor knows it: a registry id, free text, or both."""

    entity_id: UUID | None = None
    name: ShortText | None = None
    phone: Phone | None = None
    licence_number: Annotated[str, Meta(max_length=100)] | None = None
    address: Address | None = None


class Consent(ReportContent, frozen=True, kw_only=True):
    """What the worker agreed to; referral and sharing are gated on these flags later."""

    follow_up: bool = False
    referral: bool = False
    sharing: bool = False


class WorkerIdentity(ReportContent, frozen=True, kw_only=True):
    """The affected worker, when they agree to be identified. Every field is sensitive."""

    name: ShortText | None = None
    date_of_birth: dt.date | None = None
    passport_number: Annotated[str, Meta(max_length=50)] | None = None
    national_id_number: Annotated[str, Meta(max_length=50)] | None = None
    phone: Phone | None = None
    home_district: ShortText | None = None


class DeclaredAttachment(ReportContent, frozen=True, kw_only=True):
    """A photo, audio or document the report refers to; its bytes are uploaded separately."""

    sha256: Sha256Hex
    size_bytes: Annotated[int, Meta(ge=1, le=MAX_ATTACHMENT_BYTES)]
    media_type: MediaType
    sensitive: bool = False


class Report(ReportContent, frozen=True, kw_only=True):
    """An incident report. ``id`` is generated on the device so retries never create copies."""

    id: UUID
    occurred_at: AwareDatetime
    occurred_precision: TimePrecision = TimePrecision.EXACT
    location: Location
    categories: Annotated[tuple[CategoryCode, ...], Meta(min_length=1, max_length=MAX_CATEGORIES)]
    severity: Annotated[int, Meta(ge=1, le=5)]
    workers_affected: Annotated[int, Meta(ge=0, le=100_000)] = 1
    sector: Annotated[str, Meta(max_length=64)] | None = None
    origin_country: CountryCode | None = None
    destination_country: CountryCode | None = None
    narrative: Annotated[str, Meta(max_length=MAX_NARRATIVE_CHARS)] = ""
    narrative_language: LanguageTag | None = None
    employer: PartyReference | None = None
    recruiter: PartyReference | None = None
    consent: Consent = Consent()
    worker: WorkerIdentity | None = None
    attachments: Annotated[tuple[DeclaredAttachment, ...], Meta(max_length=MAX_ATTACHMENTS)] = ()


# Dotted paths into Report. Anything listed here must be encrypted or redacted outside the case
# team: logs, exports, analytics and webhooks drop these fields.
SENSITIVE_FIELDS: Final = frozenset(
    {
        "worker",
        "worker.name",
        "worker.date_of_birth",
        "worker.passport_number",
        "worker.national_id_number",
        "worker.phone",
        "worker.home_district",
    }
)

# A report's identity never changes; every other field may be amended by its monitor.
AMENDABLE_FIELDS: Final = frozenset(Report.__struct_fields__) - {"id"}
