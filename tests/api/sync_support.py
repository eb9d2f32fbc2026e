"""Helpers for sync API tests: a monitor with enrolled devices, and reports to push."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.api.conftest import Actor

Client = AsyncTestClient[Litestar]
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


class Phone(msgspec.Struct):
    """An enrolled device as a test drives it."""

    device_id: uuid.UUID
    monitor_id: uuid.UUID
    credential: str
    next_seq: int = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}

    def seq(self) -> int:
        value = self.next_seq
        self.next_seq += 1
        return value


async def new_monitor(client: Client, staff: Actor, **fields: Any) -> uuid.UUID:
    body = {"display_name": "Monitor Kathmandu-7", **fields}
    r = await client.post("/v1/monitors", json=body, headers=staff.headers)
    assert r.status_code == 201, r.text
    return uuid.UUID(r.json()["id"])


async def enrollment_code(client: Client, staff: Actor, monitor_id: uuid.UUID) -> str:
    r = await client.post(f"/v1/monitors/{monitor_id}/enrollment-codes", headers=staff.headers)
    assert r.status_code == 201, r.text
    code: str = r.json()["code"]
    return code


async def enroll(client: Client, code: str) -> Phone:
    r = await client.post("/v1/sync/enroll", json={"code": code, "device_model": "Tecno Spark"})
    assert r.status_code == 201, r.text
    body = r.json()
    return Phone(
        device_id=uuid.UUID(body["device_id"]),
        monitor_id=uuid.UUID(body["monitor_id"]),
        credential=body["credential"],
    )


async def new_phone(client: Client, staff: Actor, monitor_id: uuid.UUID | None = None) -> Phone:
    monitor = monitor_id or await new_monitor(client, staff)
    return await enroll(client, await enrollment_code(client, staff, monitor))


def report(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "occurred_at": (NOW - dt.timedelta(days=2)).isoformat(),
        "location": {"lat": 27.7172, "lon": 85.324, "accuracy_m": 12.0, "place": "Dorm 4, Block B"},
        "categories": ["FL.DOC_RETENTION", "FR.RECRUITMENT_FEE"],
        "severity": 4,
        "workers_affected": 12,
        "narrative": "Passports kept by the supervisor; fees of 1500 USD charged.",
        "narrative_language": "en",
        "employer": {"name": "Al Noor Trading W.L.L.", "phone": "+97444123456"},
        "consent": {"follow_up": True, "referral": True, "sharing": False},
        "worker": {"name": "Ram Bahadur Thapa", "passport_number": "PA1234567"},
    }
    body.update(overrides)
    return body


def create(phone: Phone, body: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
    return {
        "kind": "create_report",
        "seq": seq if seq is not None else phone.seq(),
        "mutation_id": str(uuid.uuid4()),
        "recorded_at": NOW.isoformat(),
        "report": body,
    }


def amend(
    phone: Phone, report_id: str, base_version: int, changes: dict[str, Any]
) -> dict[str, Any]:
    return {
        "kind": "amend_report",
        "seq": phone.seq(),
        "mutation_id": str(uuid.uuid4()),
        "recorded_at": NOW.isoformat(),
        "report_id": report_id,
        "base_version": base_version,
        "changes": changes,
    }


def withdraw(phone: Phone, report_id: str, base_version: int) -> dict[str, Any]:
    return {
        "kind": "delete_report",
        "seq": phone.seq(),
        "mutation_id": str(uuid.uuid4()),
        "recorded_at": NOW.isoformat(),
        "report_id": report_id,
        "base_version": base_version,
    }


def batch(phone: Phone, mutations: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "device_id": str(phone.device_id),
        "sent_at": dt.datetime.now(dt.UTC).isoformat(),
        "mutations": mutations,
        **extra,
    }


async def push(client: Client, phone: Phone, mutations: list[dict[str, Any]]) -> dict[str, Any]:
    r = await client.post("/v1/sync/push", json=batch(phone, mutations), headers=phone.headers)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def pull_all(
    client: Client, phone: Phone, cursor: str | None = None, limit: int = 200
) -> tuple[list[dict[str, Any]], str | None]:
    changes: list[dict[str, Any]] = []
    while True:
        r = await client.post(
            "/v1/sync/pull",
            json={"device_id": str(phone.device_id), "cursor": cursor, "limit": limit},
            headers=phone.headers,
        )
        assert r.status_code == 200, r.text
        page = r.json()
        assert not page["reset_required"], page
        changes += page["changes"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return changes, cursor
