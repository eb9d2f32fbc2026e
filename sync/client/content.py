"""Plausible report content for the fleet simulator: incidents around a few destination cities,
recorded by monitors in migrant-worker corridors, with the categories the server published.

Seeded and deterministic, so a failing simulation can be replayed exactly.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Sequence
from typing import Final, NamedTuple

from cases.reports import (
    Consent,
    Location,
    PartyReference,
    Report,
    TimePrecision,
    WorkerIdentity,
)

__all__ = ["CITIES", "City", "attachment_bytes", "make_report"]


class City(NamedTuple):
    name: str
    lat: float
    lon: float
    country: str
    districts: tuple[str, ...]


CITIES: Final = (
    City("Doha", 25.2854, 51.5310, "QA", ("Industrial Area", "Al Wakrah", "Mesaieed", "Al Khor")),
    City("Dubai", 25.2048, 55.2708, "AE", ("Al Quoz", "Sonapur", "Jebel Ali", "Al Qusais")),
    City("Riyadh", 24.7136, 46.6753, "SA", ("Al Sulay", "Manfouha", "Al Batha", "Al Naseem")),
    City("Kuala Lumpur", 3.1390, 101.6869, "MY", ("Klang", "Shah Alam", "Rawang", "Kajang")),
    City("Kuwait City", 29.3759, 47.9774, "KW", ("Jleeb Al-Shuyoukh", "Mahboula", "Farwaniya")),
)
_ORIGINS: Final = ("NP", "BD", "IN", "PH", "ID", "LK", "PK", "MM")
_SECTORS: Final = (
    "construction",
    "domestic_work",
    "manufacturing",
    "agriculture",
    "hospitality",
    "security",
    "cleaning",
)
_EMPLOYERS: Final = (
    "Gulf Star Contracting W.L.L.",
    "Al Noor Facilities Management LLC",
    "Desert Rose Hospitality Co.",
    "Sinar Jaya Manufacturing Sdn Bhd",
    "Pearl Coast Cleaning Services W.L.L.",
    "Falcon Security Services LLC",
)
_RECRUITERS: Final = (
    "Everest Manpower Pvt Ltd",
    "Himalayan Overseas Pvt. Ltd.",
    "Dhaka Global Recruiting Agency",
    "PT Maju Bersama Tenaga Kerja",
    "Manila Star Placement Inc",
    "a sub-agent known only as 'Raju dai'",
)
_NAMES: Final = (
    "R. Tamang",
    "S. Akter",
    "M. Santos",
    "D. Lestari",
    "K. Perera",
    "A. Rai",
    "J. Cruz",
)
_OPENINGS: Final = (
    "I met {n} workers at their accommodation in {place}.",
    "A worker called the hotline and we met near {place} after his shift.",
    "Group interview with {n} {sector} workers, {place}.",
    "Follow-up visit to the labour camp in {place}.",
)
_FACTS: Final = (
    "They paid {fee} {currency} to the agent before departure and were told it was a visa fee.",
    "Their passports were collected on arrival and are kept in the company office.",
    "Salaries for the last {months} months have not been paid.",
    "The contract they signed abroad shows a higher salary than the one they receive.",
    "They work {hours} hours a day, seven days a week, without overtime pay.",
    "The supervisor threatened to report them to the police if they complain.",
    "Twelve men share one room with no working air conditioning.",
    "They are not allowed to leave the camp except on Friday afternoons.",
    "The recruiter says they must repay a loan before they can change employer.",
)
_CLOSINGS: Final = (
    "They want help to get their passports back.",
    "Two of them agreed to be contacted again.",
    "They are afraid of losing their jobs if they are identified.",
    "Please advise on the complaint process.",
    "",
)
_MEDIA: Final = ("image/jpeg", "image/jpeg", "audio/mp4", "application/pdf")


def _narrative(rng: random.Random, place: str, sector: str, workers: int) -> str:
    values = {
        "n": workers,
        "place": place,
        "sector": sector.replace("_", " "),
        "fee": rng.choice((75_000, 120_000, 150_000, 350_000, 2_500)),
        "currency": rng.choice(("NPR", "BDT", "PHP", "USD")),
        "months": rng.randint(2, 7),
        "hours": rng.randint(11, 15),
    }
    sentences = [rng.choice(_OPENINGS), *rng.sample(_FACTS, rng.randint(1, 3))]
    sentences.append(rng.choice(_CLOSINGS))
    return " ".join(s.format(**values) for s in sentences if s)


def make_report(
    rng: random.Random, city: City, categories: Sequence[str], device_now: dt.datetime
) -> Report:
    """One report recorded at ``device_now`` (the device's own, possibly wrong, clock)."""
    place = rng.choice(city.districts)
    sector = rng.choice(_SECTORS)
    workers = rng.choice((1, 1, 2, 3, 5, 8, 12, 25, 40))
    precision = rng.choice(list(TimePrecision))
    occurred = device_now - dt.timedelta(hours=rng.uniform(1, 24 * 40))
    identified = rng.random() < 0.3
    return Report(
        id=uuid.UUID(int=rng.getrandbits(128), version=4),
        occurred_at=occurred.replace(microsecond=0),
        occurred_precision=precision,
        location=Location(
            lat=round(city.lat + rng.uniform(-0.08, 0.08), 6),
            lon=round(city.lon + rng.uniform(-0.08, 0.08), 6),
            accuracy_m=round(rng.uniform(4, 80), 1),
            place=f"{place}, {city.name}",
        ),
        categories=tuple(rng.sample(list(categories), min(len(categories), rng.randint(1, 3)))),
        severity=rng.randint(1, 5),
        workers_affected=workers,
        sector=sector,
        origin_country=rng.choice(_ORIGINS),
        destination_country=city.country,
        narrative=_narrative(rng, place, sector, workers),
        narrative_language="en",
        employer=PartyReference(name=rng.choice(_EMPLOYERS)) if rng.random() < 0.8 else None,
        recruiter=PartyReference(name=rng.choice(_RECRUITERS)) if rng.random() < 0.6 else None,
        consent=Consent(follow_up=identified or rng.random() < 0.5, referral=identified),
        worker=(
            WorkerIdentity(
                name=rng.choice(_NAMES),
                passport_number=f"P{rng.randint(1_000_000, 9_999_999)}",
                home_district=rng.choice(("Jhapa", "Sylhet", "Ilocos Norte", "Lombok")),
            )
            if identified
            else None
        ),
    )


def attachment_bytes(rng: random.Random, max_bytes: int) -> tuple[bytes, str]:
    """A photo, voice note or document: a few KB to ``max_bytes``, log-uniformly distributed."""
    low = 4 * 1024
    size = int(low * (max(max_bytes, low) / low) ** rng.random())
    return rng.randbytes(size), rng.choice(_MEDIA)
