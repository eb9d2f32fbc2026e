"""The Report's limits are enforced at decode time, in JSON and in MessagePack."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from cases.reports import AMENDABLE_FIELDS, SENSITIVE_FIELDS, Report, WorkerIdentity
from tests.unit.sync.samples import report_dict

FORMATS = ["json", "msgpack"]


def decode(body: dict[str, Any], fmt: str) -> Report:
    if fmt == "json":
        return msgspec.json.decode(msgspec.json.encode(body), type=Report)
    return msgspec.msgpack.decode(msgspec.msgpack.encode(body), type=Report)


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_report_decodes(fmt: str) -> None:
    report = decode(report_dict(), fmt)
    assert report.categories == ("FR.RECRUITMENT_FEE", "FL.DOC_RETENTION")
    assert report.location.lat == pytest.approx(25.2854)
    assert report.employer is not None
    assert report.employer.entity_id is None
    assert report.recruiter is not None
    assert report.recruiter.entity_id is not None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 90.0001, -91.0])
def test_latitude_rejects_nan_infinity_and_out_of_range(value: float) -> None:
    # Only msgpack can carry NaN and infinities; JSON has no spelling for them.
    body = report_dict(location={"lat": value, "lon": 10.0})
    with pytest.raises(msgspec.ValidationError, match=r"location\.lat"):
        decode(body, "msgpack")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 180.5])
def test_longitude_rejects_nan_infinity_and_out_of_range(value: float) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"location\.lon"):
        decode(report_dict(location={"lat": 1.0, "lon": value}), "msgpack")


def test_json_nan_literal_is_malformed() -> None:
    raw = msgspec.json.encode(report_dict()).replace(b"25.2854", b"NaN")
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(raw, type=Report)


def test_json_overflowing_number_is_refused() -> None:
    raw = msgspec.json.encode(report_dict()).replace(b"25.2854", b"1e400")
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=Report)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"categories": []}, "categories"),
        ({"categories": [f"c{i:02d}" for i in range(21)]}, "categories"),
        ({"categories": ["Not A Code"]}, "categories"),
        ({"severity": 0}, "severity"),
        ({"severity": 6}, "severity"),
        ({"workers_affected": -1}, "workers_affected"),
        ({"workers_affected": 100_001}, "workers_affected"),
        ({"origin_country": "NPL"}, "origin_country"),
        ({"destination_country": "qa"}, "destination_country"),
        ({"narrative": "x" * 20_001}, "narrative"),
        ({"narrative_language": "english please"}, "narrative_language"),
        ({"occurred_at": "2025-02-27T08:30:00"}, "occurred_at"),
        ({"occurred_precision": "year"}, "occurred_precision"),
        ({"attachments": [{"sha256": "A" * 64, "size_bytes": 1, "media_type": "a/b"}]}, "sha256"),
        ({"attachments": [{"sha256": "a" * 64, "size_bytes": 0, "media_type": "a/b"}]}, "size"),
        (
            {"attachments": [{"sha256": "b" * 64, "size_bytes": 1, "media_type": "a/b"}] * 21},
            "attachments",
        ),
        ({"worker": {"name": "n" * 201}}, "worker.name"),
    ],
)
def test_limits_are_enforced(fmt: str, overrides: dict[str, Any], where: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=where):
        decode(report_dict(**overrides), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_fields_are_ignored_for_newer_apps(fmt: str) -> None:
    body = report_dict(weather="rain")
    body["location"]["altitude_m"] = 12
    assert decode(body, fmt) == decode(report_dict(), fmt)


def test_defaults_stay_off_the_wire() -> None:
    minimal = {
        "id": "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab",
        "occurred_at": "2025-02-27T08:30:00Z",
        "location": {"lat": 1.0, "lon": 2.0},
        "categories": ["FL.WAGE_WITHHOLDING"],
        "severity": 2,
    }
    report = msgspec.json.decode(msgspec.json.encode(minimal), type=Report)
    assert msgspec.json.decode(msgspec.json.encode(report)) == minimal


def test_sensitive_fields_name_real_worker_fields() -> None:
    assert "worker" in SENSITIVE_FIELDS
    nested = {f.split(".", 1)[1] for f in SENSITIVE_FIELDS if f.startswith("worker.")}
    assert nested == set(WorkerIdentity.__struct_fields__)
    assert {f.split(".")[0] for f in SENSITIVE_FIELDS} <= set(Report.__struct_fields__)


def test_report_id_is_not_amendable() -> None:
    assert "id" not in AMENDABLE_FIELDS
    assert "narrative" in AMENDABLE_FIELDS
