"""Sample reports and mutations for the sync tests: valid by default, overridable per test."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec

from cases.reports import Report
from sync.messages import CreateReport

__all__ = ["NOW", "create_report", "report_dict", "sample_report"]

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def report_dict(**overrides: Any) -> dict[str, Any]:
    """A report as plain wire data (what an app would send)."""
    body: dict[str, Any] = {
        "id": "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab",
        "occurred_at": "2025-02-27T08:30:00+03:00",
        "occurred_precision": "day",
        "location": {"lat": 25.2854, "lon": 51.531, "accuracy_m": 12.5, "place": "Industrial Area"},
        "categories": ["FR.RECRUITMENT_FEE", "FL.DOC_RETENTION"],
        "severity": 4,
        "workers_affected": 12,
        "sector": "construction",
        "origin_country": "NP",
        "destination_country": "QA",
        "narrative": "Workers say the agency kept their passports.",
        "narrative_language": "en",
        "employer": {"name": "Gulf Star Contracting W.L.L.", "phone": "+97455512345"},
        "recruiter": {"entity_id": "0b8f8c1e-8a1e-4bb0-9a0a-5b8c3c2d1e0f"},
        "consent": {"follow_up": True, "referral": False, "sharing": False},
        "worker": {"name": "R. Tamang", "passport_number": "PA1234567"},
        "attachments": [
            {"sha256": "a" * 64, "size_bytes": 204800, "media_type": "image/jpeg"},
        ],
    }
    body.update(overrides)
    return body


def sample_report(**overrides: Any) -> Report:
    return msgspec.convert(report_dict(**overrides), Report)


def create_report(seq: int, *, report: Report | None = None, **overrides: Any) -> CreateReport:
    """A CreateReport with a mutation id derived from ``seq`` (stable across calls)."""
    fields: dict[str, Any] = {
        "seq": seq,
        "mutation_id": uuid.UUID(int=seq),
        "recorded_at": NOW,
        "report": report or sample_report(id=str(uuid.UUID(int=10_000 + seq))),
    }
    fields.update(overrides)
    return CreateReport(**fields)
