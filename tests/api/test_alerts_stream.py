"""The live alert stream (server-sent events) over a real HTTP server: a dashboard connected to
``/v1/alerts/stream`` receives the alert a scan raises, as the analyst payload, and only its
own organisation's events. (The in-process test client buffers whole responses, so an endless
stream needs a real server.)"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn

from cases.accounts import Role
from server.app import create_app
from server.settings import Settings
from storage.accounts import OrgRepository, UserRepository
from storage.db import Conn
from storage.queries import Q
from tests.api.conftest import PASSWORD, _password_hash
from tests.api.test_alerts_data import IDENTIFYING_KEYS, json_keys, seed_reports
from tests.conftest import truncate_all

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def live_url(api_settings: Settings) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(api_settings), lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)  # polling for start-up, with a deadline
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
async def cleanup(pool: asyncpg.Pool) -> AsyncIterator[None]:
    yield
    await truncate_all(pool)


async def _login(http: httpx.AsyncClient, pool: asyncpg.Pool) -> tuple[uuid.UUID, dict[str, str]]:
    slug = f"sse-{uuid.uuid4().hex[:8]}"
    email = f"analyst@{slug}.example.org"
    async with pool.acquire() as conn:
        org = await OrgRepository(conn).add(slug, "Stream test")
        await UserRepository(conn).add(org.id, email, "Analyst", Role.ANALYST, _password_hash())
    r = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return org.id, {"Authorization": f"Bearer {r.json()['token']}"}


async def _next_event(lines: AsyncIterator[str]) -> dict[str, str]:
    """Fields of the next SSE event that carries data (comments are skipped)."""
    event: dict[str, str] = {}
    async for line in lines:
        if not line:
            if "data" in event:
                return event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")
    raise AssertionError("the stream ended")


async def test_stream_delivers_the_alert_a_scan_raises(
    live_url: str, pool: asyncpg.Pool, cleanup: None
) -> None:
    async with httpx.AsyncClient(base_url=live_url, timeout=60) as http:
        org_id, headers = await _login(http, pool)
        other_org, other_headers = await _login(http, pool)
        async with pool.acquire() as conn:
            seeded = await seed_reports(conn, org_id, background=80, cluster=10)
            await seed_reports(conn, other_org, background=80, cluster=10)
        body = {
            "params": {
                "study_days": 60,
                "analysis_date": str(seeded.analysis_date),
                "entity_scan": False,
                "categories": ["FL.DOC_RETENTION"],
                "replicas": 199,
            },
            "raise_alerts": True,
        }
        async with http.stream("GET", "/v1/alerts/stream", headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith(":")  # connected: later events will come
            # Another organisation's alert first: it must not reach this stream.
            r = await http.post("/v1/risk/runs", json=body, headers=other_headers)
            assert r.status_code == 201 and r.json()["alerts_raised"] == 1
            r = await http.post("/v1/risk/runs", json=body, headers=headers)
            assert r.status_code == 201 and r.json()["alerts_raised"] == 1
            event = await asyncio.wait_for(_next_event(lines), timeout=30)
        assert event["event"] == "alert.created"
        alert = msgspec.json.decode(event["data"])
        assert alert["last_run_id"] == r.json()["id"]
        assert not json_keys(alert) & IDENTIFYING_KEYS
        r = await http.get(f"/v1/alerts/{alert['id']}", headers=headers)
        assert r.status_code == 200 and int(event["id"].partition(".")[0]) > 0

        # Reconnecting with Last-Event-ID replays what came after it (here: the verdict).
        await http.put(
            f"/v1/alerts/{alert['id']}/verdict", json={"verdict": "true_alarm"}, headers=headers
        )
        replay_headers = {**headers, "Last-Event-ID": event["id"]}
        async with http.stream("GET", "/v1/alerts/stream", headers=replay_headers) as stream:
            replayed = await asyncio.wait_for(_next_event(stream.aiter_lines()), timeout=30)
        assert replayed["event"] == "alert.verdict"
        assert msgspec.json.decode(replayed["data"])["verdict"] == "true_alarm"


async def _bare_alert(conn: Conn, org_id: uuid.UUID) -> uuid.UUID:
    alert: uuid.UUID = await conn.fetchval(
        "INSERT INTO alerts (org_id, kind, scope, window_start, window_end, observed, expected,"
        " ratio, llr, p_value, replicas, recurrence_interval_days, member_report_ids, method,"
        " params, seed, code_version, quality, first_run_id, last_run_id)"
        " VALUES ($1, 'space_time', 'all', current_date, current_date, 9, 1.5, 6, 9.5, 0.001,"
        " 999, 1000, '{}', 'test', '{}', 1, 'test', '{}', gen_random_uuid(), gen_random_uuid())"
        " RETURNING id",
        org_id,
    )
    return alert


async def _event(conn: Conn, org_id: uuid.UUID, alert: uuid.UUID, n: int) -> int:
    seq: int = await conn.fetchval(
        Q.insert_alert_version, alert, org_id, n, f"alert.test_{n}", None, None, f'{{"n": {n}}}'
    )
    return seq


async def test_an_event_that_commits_after_a_later_one_is_still_sent(
    live_url: str, pool: asyncpg.Pool, cleanup: None
) -> None:
    """A scan's transaction takes an event number, an analyst's action takes the next and
    commits first: the dashboard gets the analyst's event, then the scan's when it commits
    (the stream used to ask only for numbers after the last one it sent). A reconnect from the
    first event's id gets the late one too."""
    async with httpx.AsyncClient(base_url=live_url, timeout=60) as http:
        org_id, headers = await _login(http, pool)
        async with pool.acquire() as scan, pool.acquire() as analyst:
            alert = await _bare_alert(analyst, org_id)
            async with http.stream("GET", "/v1/alerts/stream", headers=headers) as stream:
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith(":")
                running = scan.transaction()
                await running.start()
                late = await _event(scan, org_id, alert, 1)
                early = await _event(analyst, org_id, alert, 2)
                assert late < early  # the premise: numbered in one order, committed in the other
                await analyst.execute(Q.notify_alerts, str(org_id))
                first = await asyncio.wait_for(_next_event(lines), timeout=30)
                assert first["event"] == "alert.test_2"
                await running.commit()
                await analyst.execute(Q.notify_alerts, str(org_id))
                second = await asyncio.wait_for(_next_event(lines), timeout=30)
                assert second["event"] == "alert.test_1"
        resume = {**headers, "Last-Event-ID": first["id"]}
        async with http.stream("GET", "/v1/alerts/stream", headers=resume) as stream:
            replayed = await asyncio.wait_for(_next_event(stream.aiter_lines()), timeout=30)
        assert replayed["event"] == "alert.test_1"
        bad = {**headers, "Last-Event-ID": "twelve"}
        r = await http.get("/v1/alerts/stream", headers=bad)
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
