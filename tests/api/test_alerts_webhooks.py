"""Webhook delivery: only matching subscriptions are called, the signature verifies with the
secret shown at subscription time, and a failing endpoint is retried with growing delays through
the job table until the delivery is dead-lettered."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import h3
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cases.accounts import Role
from server.resources import resources_of
from server.risk_jobs import HANDLERS
from server.webhooks import SIGNATURE_HEADER, verify
from server.worker import WorkerContext, run_worker_once
from storage.risk_delivery import MAX_DELIVERY_ATTEMPTS, retry_delay
from tests.api.conftest import make_actor
from tests.api.test_alerts_data import CLUSTER_POINT, IDENTIFYING_KEYS, json_keys, seed_reports

pytestmark = pytest.mark.db

Client = AsyncTestClient[Litestar]


class Receiver:
    """A tiny HTTP endpoint on 127.0.0.1 that records requests and answers ``status``; with
    ``probe``, it also records what ``probe()`` returns while each request is being answered."""

    def __init__(self, status: int, probe: Callable[[], Any] | None = None) -> None:
        self.status = status
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.probed: list[Any] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if probe is not None:
                    outer.probed.append(probe())
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    ok, failing = Receiver(204), Receiver(500)
    try:
        yield ok, failing
    finally:
        ok.close()
        failing.close()


async def _subscribe(client: Client, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/alerts/subscriptions", json=body, headers=headers)
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


async def test_webhooks_signed_filtered_retried_and_dead_lettered(
    client: Client, pool: asyncpg.Pool, receivers: tuple[Receiver, Receiver]
) -> None:
    ok, failing = receivers
    analyst = await make_actor(client, pool, Role.ANALYST)
    district = h3.latlng_to_cell(CLUSTER_POINT[0], CLUSTER_POINT[1], 5)
    matching = await _subscribe(
        client, analyst.headers, name="Doha district", cells=[district],
        categories=["FL.DOC_RETENTION"], min_recurrence_days=100, webhook_url=ok.url,
    )  # fmt: skip
    elsewhere = await _subscribe(
        client, analyst.headers, name="Nepal only", countries=["NP"], webhook_url=ok.url
    )
    other_category = await _subscribe(
        client, analyst.headers, name="Violence", categories=["FL.PHYSICAL_VIOLENCE"],
        webhook_url=ok.url,
    )  # fmt: skip
    broken = await _subscribe(
        client, analyst.headers, name="Broken endpoint", countries=["QA"], webhook_url=failing.url
    )
    assert matching["webhook_secret"].startswith("whsec_")
    listed = (await client.get("/v1/alerts/subscriptions", headers=analyst.headers)).json()
    assert len(listed) == 4 and all(s["webhook_secret"] is None for s in listed)

    async with pool.acquire() as conn:
        seeded = await seed_reports(conn, analyst.org_id)
    body = {
        "params": {
            "study_days": 60, "analysis_date": str(seeded.analysis_date), "entity_scan": False,
            "seed": 3,
        },
        "raise_alerts": True,
    }  # fmt: skip
    r = await client.post("/v1/risk/runs", json=body, headers=analyst.headers)
    assert r.status_code == 201 and r.json()["alerts_raised"] >= 1

    context = WorkerContext(resources=resources_of(client.app.state))
    await run_worker_once(pool, HANDLERS, batch=50, context=context)

    # The matching subscription got signed, verifiable deliveries without identities.
    assert ok.requests
    for headers, raw in ok.requests:
        assert verify(matching["webhook_secret"], headers[SIGNATURE_HEADER.lower()], raw)
        assert not verify(elsewhere["webhook_secret"], headers[SIGNATURE_HEADER.lower()], raw)
        assert not verify(matching["webhook_secret"], headers[SIGNATURE_HEADER.lower()], raw + b" ")
        payload = msgspec.json.decode(raw)
        assert payload["type"] == "alert.created" and payload["data"]["cells"]
        assert not json_keys(payload) & IDENTIFYING_KEYS
    for sub in (elsewhere, other_category):
        r = await client.get(
            f"/v1/alerts/subscriptions/{sub['id']}/deliveries", headers=analyst.headers
        )
        assert r.json() == []
    delivered = (
        await client.get(
            f"/v1/alerts/subscriptions/{matching['id']}/deliveries", headers=analyst.headers
        )
    ).json()
    assert len(delivered) == len(ok.requests)
    assert all(d["state"] == "delivered" and d["attempts"] == 1 for d in delivered)

    # The failing endpoint: retried with doubling delays, then dead-lettered.
    deliveries_url = f"/v1/alerts/subscriptions/{broken['id']}/deliveries"
    first = (await client.get(deliveries_url, headers=analyst.headers)).json()
    assert first and all(d["state"] == "failed" and d["attempts"] == 1 for d in first)
    target = first[0]["id"]
    for attempt in range(2, MAX_DELIVERY_ATTEMPTS + 1):
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT run_after - now() AS wait FROM jobs WHERE kind = 'risk.webhook'"
                " AND state = 'pending' AND payload->>'delivery_id' = $1",
                target,
            )
            assert row is not None, attempt
            expected = retry_delay(attempt - 1)
            assert expected - dt.timedelta(seconds=30) < row["wait"] <= expected
            # Time travel instead of waiting: make the due retries due now.
            await conn.execute(
                "UPDATE jobs SET run_after = now()"
                " WHERE kind = 'risk.webhook' AND state = 'pending'"
            )
        await run_worker_once(pool, HANDLERS, batch=50, context=context)
    final = (await client.get(deliveries_url, headers=analyst.headers)).json()
    assert {d["state"] for d in final} == {"dead"}
    assert all(d["attempts"] == MAX_DELIVERY_ATTEMPTS and d["last_status"] == 500 for d in final)
    assert len(failing.requests) == MAX_DELIVERY_ATTEMPTS * len(final)
    async with pool.acquire() as conn:
        pending = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE kind = 'risk.webhook' AND state = 'pending'"
        )
    assert pending == 0


async def test_subscriptions_are_personal_and_validated(client: Client, pool: asyncpg.Pool) -> None:
    analyst = await make_actor(client, pool, Role.ANALYST)
    mine = await _subscribe(client, analyst.headers, name="Everything")
    assert mine["webhook_secret"] is None
    async with pool.acquire() as conn:
        slug = await conn.fetchval("SELECT slug FROM orgs WHERE id = $1", analyst.org_id)
    colleague = await make_actor(client, pool, Role.ANALYST, org_slug=slug)
    assert colleague.org_id == analyst.org_id
    assert (await client.get("/v1/alerts/subscriptions", headers=colleague.headers)).json() == []
    r = await client.delete(f"/v1/alerts/subscriptions/{mine['id']}", headers=colleague.headers)
    assert r.status_code == 404
    for bad in (
        {"name": "x", "cells": ["not-a-cell"]},
        {"name": "x", "cells": ["0123456789abcde"]},
        {"name": "x", "categories": ["FL.UNKNOWN"]},
        {"name": "x", "webhook_url": "ftp://example.org"},
    ):
        r = await client.post("/v1/alerts/subscriptions", json=bad, headers=analyst.headers)
        assert r.status_code == 422, bad
    r = await client.delete(f"/v1/alerts/subscriptions/{mine['id']}", headers=analyst.headers)
    assert r.status_code == 204


def transactions_open_in(dsn: str) -> Callable[[], list[str]]:
    """A probe for the receiver's thread: what other sessions of the database hold a transaction
    open (and with it, row locks and a connection) while the request is being answered."""

    async def check() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT state, left(query, 80) AS query FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND xact_start IS NOT NULL"
            )
        finally:
            await conn.close()
        return [f"{r['state']}: {r['query']}" for r in rows]

    return lambda: asyncio.run(check())


async def test_no_transaction_is_open_while_the_endpoint_answers(
    client: Client, pool: asyncpg.Pool, database_dsn: str
) -> None:
    """A slow endpoint must not keep a database transaction (and the delivery's row lock and a
    pool connection) open for up to the timeout: the POST happens between two transactions."""
    receiver = Receiver(204, probe=transactions_open_in(database_dsn))
    try:
        analyst = await make_actor(client, pool, Role.ANALYST)
        sub = await _subscribe(
            client, analyst.headers, name="Qatar", countries=["QA"], webhook_url=receiver.url
        )
        async with pool.acquire() as conn:
            seeded = await seed_reports(conn, analyst.org_id)
        body = {
            "params": {
                "study_days": 60, "analysis_date": str(seeded.analysis_date),
                "entity_scan": False, "seed": 3,
            },
            "raise_alerts": True,
        }  # fmt: skip
        r = await client.post("/v1/risk/runs", json=body, headers=analyst.headers)
        assert r.status_code == 201 and r.json()["alerts_raised"] >= 1

        context = WorkerContext(resources=resources_of(client.app.state))
        await run_worker_once(pool, HANDLERS, batch=50, context=context)
    finally:
        receiver.close()

    assert receiver.requests and len(receiver.probed) == len(receiver.requests)
    assert receiver.probed == [[] for _ in receiver.requests]
    # The outcome was still recorded, after the POST, in a transaction of its own.
    deliveries = (
        await client.get(
            f"/v1/alerts/subscriptions/{sub['id']}/deliveries", headers=analyst.headers
        )
    ).json()
    assert len(deliveries) == len(receiver.requests)
    assert all(d["state"] == "delivered" and d["attempts"] == 1 for d in deliveries)
