"""The device side of the sync benchmark: an organisation with monitors and enrolled devices,
realistic report bodies, and the push and pull loops a phone runs, over real HTTP.

The organisation and its first staff account are created with the repositories (as
``fairwatch create-org`` / ``create-user`` do: the API has no endpoint for them); everything else
goes through the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
import uuid
from typing import Any

import httpx
import msgspec
import zstandard

from cases.accounts import Role
from server.passwords import hash_password
from storage.accounts import OrgRepository, UserRepository
from storage.db import connect

__all__ = ["Device", "Fleet", "PullRun", "create_fleet", "pull_everything", "push_batches"]

PASSWORD = "correct horse battery staple"  # noqa: S105 (a throwaway database)
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
_NAMES = ["Ram Bahadur Thapa", "Sita Kumari Rai", "Mohammad Rafiq", "Joseph Mensah", "Ana Reyes"]
_EMPLOYERS = ["Al Noor Trading W.L.L.", "Gulf Star Cleaning", "Desert Rose Contracting"]
_CATEGORIES = [
    ["FL.DOC_RETENTION", "FR.RECRUITMENT_FEE"],
    ["FL.DOC_RETENTION"],
    ["FR.RECRUITMENT_FEE"],
]


class Device(msgspec.Struct):
    device_id: uuid.UUID
    monitor_id: uuid.UUID
    credential: str
    next_seq: int = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


class Fleet(msgspec.Struct):
    org_id: uuid.UUID
    staff_token: str
    devices: list[Device]


async def _staff_token(client: httpx.AsyncClient, dsn: str) -> tuple[uuid.UUID, str]:
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    email = f"admin@{slug}.example.org"
    conn = await connect(dsn)
    try:
        org = await OrgRepository(conn).add(slug, f"Sync benchmark {slug}")
        await UserRepository(conn).add(
            org.id, email, "Bench admin", Role.ORG_ADMIN, hash_password(PASSWORD)
        )
    finally:
        await conn.close()
    r = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    r.raise_for_status()
    token: str = r.json()["token"]
    return org.id, token


async def new_monitor(
    client: httpx.AsyncClient, token: str, name: str, cells: list[str]
) -> uuid.UUID:
    r = await client.post(
        "/v1/monitors",
        json={"display_name": name, "region_cells": cells},
        headers={"Authorization": f"Bearer {token}"},
    )
    r.raise_for_status()
    return uuid.UUID(r.json()["id"])


async def enroll_device(client: httpx.AsyncClient, token: str, monitor_id: uuid.UUID) -> Device:
    r = await client.post(
        f"/v1/monitors/{monitor_id}/enrollment-codes",
        headers={"Authorization": f"Bearer {token}"},
    )
    r.raise_for_status()
    r = await client.post(
        "/v1/sync/enroll", json={"code": r.json()["code"], "device_model": "Tecno Spark"}
    )
    r.raise_for_status()
    body = r.json()
    return Device(
        device_id=uuid.UUID(body["device_id"]),
        monitor_id=uuid.UUID(body["monitor_id"]),
        credential=body["credential"],
    )


async def create_fleet(client: httpx.AsyncClient, dsn: str, n_devices: int, cell: str) -> Fleet:
    """An org, its admin, and one monitor (region ``cell``) with its own device per pusher."""
    org_id, token = await _staff_token(client, dsn)
    devices = []
    for i in range(n_devices):
        monitor = await new_monitor(client, token, f"Monitor Doha-{i + 1}", [cell])
        devices.append(await enroll_device(client, token, monitor))
    return Fleet(org_id=org_id, staff_token=token, devices=devices)


def report(rng: random.Random) -> dict[str, Any]:
    """A report like a monitor files one, with a worker identity (sealed by the server)."""
    name = rng.choice(_NAMES)
    return {
        "id": str(uuid.uuid4()),
        "occurred_at": (NOW - dt.timedelta(days=rng.randint(1, 30))).isoformat(),
        "location": {
            "lat": 25.2854 + rng.uniform(-0.05, 0.05),
            "lon": 51.5310 + rng.uniform(-0.05, 0.05),
            "accuracy_m": 12.0,
            "place": f"Dorm {rng.randint(1, 40)}, Block {rng.choice('ABCDEF')}",
        },
        "categories": rng.choice(_CATEGORIES),
        "severity": rng.randint(1, 5),
        "workers_affected": rng.randint(1, 60),
        "narrative": (
            f"Passports kept by the supervisor since arrival; fees of {rng.randint(5, 30) * 100} "
            "USD charged before departure. Workers say wages are paid two months late."
        ),
        "narrative_language": "en",
        "employer": {
            "name": rng.choice(_EMPLOYERS),
            "phone": f"+9744{rng.randint(1000000, 9999999)}",
        },
        "consent": {"follow_up": True, "referral": True, "sharing": False},
        "worker": {"name": name, "passport_number": f"PA{rng.randint(1000000, 9999999)}"},
    }


def create_mutations(device: Device, reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    mutations = []
    for body in reports:
        mutations.append(
            {
                "kind": "create_report",
                "seq": device.next_seq,
                "mutation_id": str(uuid.uuid4()),
                "recorded_at": NOW.isoformat(),
                "report": body,
            }
        )
        device.next_seq += 1
    return mutations


def push_body(device: Device, mutations: list[dict[str, Any]]) -> bytes:
    return msgspec.json.encode(
        {
            "protocol_version": "1",
            "device_id": str(device.device_id),
            "sent_at": dt.datetime.now(dt.UTC).isoformat(),
            "outbox_depth": len(mutations),
            "mutations": mutations,
        }
    )


async def push_batches(client: httpx.AsyncClient, work: list[tuple[Device, list[bytes]]]) -> float:
    """Each device sends its batches one after another, all devices at once; wall seconds."""

    async def one_device(device: Device, bodies: list[bytes]) -> None:
        headers = {**device.headers, "Content-Type": "application/json"}
        for body in bodies:
            r = await client.post("/v1/sync/push", content=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"push failed: {r.status_code} {r.text[:500]}")
            results = msgspec.json.decode(r.content)["results"]
            refused = [x for x in results if x["status"] != "applied"]
            if refused:
                raise RuntimeError(f"push not applied: {refused[0]}")

    start = time.perf_counter()
    await asyncio.gather(*(one_device(d, b) for d, b in work))
    return time.perf_counter() - start


class PullRun(msgspec.Struct, frozen=True):
    seconds: float
    changes: int
    pages: int
    wire_bytes: int


_ZSTD = zstandard.ZstdDecompressor()


async def pull_everything(
    client: httpx.AsyncClient, device: Device, *, limit: int = 1000, msgpack: bool = True
) -> PullRun:
    """A first full sync: from no cursor until ``has_more`` is false, decoding every page."""
    if msgpack:
        headers = {
            **device.headers,
            "Content-Type": "application/msgpack",
            "Accept": "application/msgpack",
            "Accept-Encoding": "zstd",
        }
    else:
        headers = {
            **device.headers,
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
        }
    cursor: str | None = None
    changes = pages = wire = 0
    start = time.perf_counter()
    while True:
        ask = {
            "protocol_version": "1",
            "device_id": str(device.device_id),
            "cursor": cursor,
            "limit": limit,
        }
        body = msgspec.msgpack.encode(ask) if msgpack else msgspec.json.encode(ask)
        # Compressed bytes as received (httpx would inflate zstd only with its extra installed).
        async with client.stream("POST", "/v1/sync/pull", content=body, headers=headers) as r:
            raw = b"".join([chunk async for chunk in r.aiter_raw()])
            encoding = r.headers.get("content-encoding", "identity")
            if r.status_code != 200:
                raise RuntimeError(f"pull failed: {r.status_code} {raw[:500]!r}")
        wire += len(raw)
        if encoding == "zstd":
            raw = _ZSTD.decompress(raw)
        page = msgspec.msgpack.decode(raw) if msgpack else msgspec.json.decode(raw)
        if page["reset_required"]:
            raise RuntimeError(f"unexpected reset: {page.get('reset_reason')}")
        changes += len(page["changes"])
        pages += 1
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return PullRun(time.perf_counter() - start, changes, pages, wire)
