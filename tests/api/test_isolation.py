"""Organisation isolation, proved for EVERY route the app has: nothing of org A reaches org B.

Objects are created in org A (through the API where one exists; alerts, which only the scanner
raises, through the database). Then every (method, path) of ``app.routes`` is called by org B's
staff (each role the route admits) or by B's enrolled phone (sync routes), with A's ids in the
path and in any query parameter that names an object. Every answer must be free of A's ids and
values (problem ``instance`` aside, which echoes the path); a route naming an A object must say
404; and afterwards A's rows in every table are unchanged. A path parameter with no factory below
fails the test: a new route cannot escape it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cases.accounts import Role
from server.passwords import hash_token, new_token
from storage.accounts import SessionRepository
from tests.api.asgi import get_scope
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import (
    Phone,
    amend,
    batch,
    create,
    enroll,
    enrollment_code,
    new_monitor,
    push,
    report,
)
from tests.api.test_route_policy import declared_callers, operations

pytestmark = pytest.mark.db

Client = AsyncTestClient[Litestar]
_PARAM = re.compile(r"{(\w+):\w+}")
# Objects of A a route may name without answering 404, and why that is no leak.
NOT_404: dict[tuple[str, str], str] = {
    # B's phone sends a part of B's own upload of that hash (started in this sweep).
    ("PUT", "/v1/sync/attachments/{sha256:str}/parts/{index:int}"): "B's own upload",
    # B's phone asks about a blob by hash: "not uploaded by your organisation" (starts nothing).
    ("GET", "/v1/sync/attachments/{sha256:str}"): "status of B's own (absent) upload",
}
STREAM_SECONDS = 1.0


class World(msgspec.Struct):
    """Org A's objects by path-parameter name, and every value that must not reach org B."""

    ids: dict[str, str]
    markers: set[str]
    case_version: int = 1


async def _json(response: Any, status: int = 201) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def _build_org_a(client: Client, pool: asyncpg.Pool, app: Litestar) -> World:
    slug = f"iso-a-{uuid.uuid4().hex[:6]}"
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    cm = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=slug)
    monitor = await new_monitor(client, cm, display_name="Monitor ZqXwv-Alpha")
    phone = await enroll(client, await enrollment_code(client, cm, monitor))
    second = await enroll(client, await enrollment_code(client, cm, monitor))
    blob = b"evidence photo bytes of org A " * 10
    sha = hashlib.sha256(blob).hexdigest()
    body = report(
        worker={"name": "Kamala ZqXwv Gurung", "passport_number": "PZQ777123"},
        narrative="ZqXwv narrative: the supervisor keeps passports in the ZqXwv office.",
        attachments=[{"sha256": sha, "size_bytes": len(blob), "media_type": "image/jpeg"}],
    )
    body["location"] = {**body["location"], "place": "ZqXwv dormitory block 9"}
    await push(client, phone, [create(phone, body)])
    other = report(narrative="ZqXwv second report, same dormitory.")
    await push(client, phone, [create(phone, other)])
    # A true conflict for the review queue (same field, two values).
    await push(client, phone, [amend(phone, body["id"], 1, {"severity": 5})])
    await push(client, second, [amend(second, body["id"], 1, {"severity": 1})])
    started = await client.post(
        "/v1/sync/attachments",
        json={"sha256": sha, "size_bytes": len(blob), "media_type": "image/jpeg"},
        headers=phone.headers,
    )
    assert started.status_code == 200, started.text
    part = await client.put(
        f"/v1/sync/attachments/{sha}/parts/0", content=blob, headers=phone.headers
    )
    assert part.status_code == 200, part.text
    entity = await _json(
        await client.post(
            "/v1/registry/entities",
            json={"kind": "employer", "legal_name": "ZqXwv Manpower Holdings"},
            headers=cm.headers,
        )
    )
    ids = {
        "user_id": str(cm.user_id),
        "monitor_id": str(monitor),
        "device_id": str(phone.device_id),
        "report_id": body["id"],
        "entity_id": entity["id"],
        "sha256": sha,
        "index": "0",
        "job": "incident",
        "fmt": "csv",
    }
    async with pool.acquire() as conn:
        ids["session_id"] = str(
            await conn.fetchval("SELECT id FROM staff_sessions WHERE user_id = $1", cm.user_id)
        )
        ids["conflict_id"] = str(
            await conn.fetchval("SELECT id FROM report_conflicts WHERE report_id = $1", body["id"])
        )
    world = World(ids=ids, markers=set())
    await _case_objects(client, cm, admin, world)
    await _risk_objects(client, pool, admin, world)
    await _matching_objects(pool, app, admin, world)
    world.markers = {
        *ids.values(),
        str(admin.org_id), slug, admin.email, cm.email,
        "ZqXwv",  # every free text of A carries it: names, narrative, place, entity, monitor
        "PZQ777123",
    } - {"0", "incident", "csv"}  # fmt: skip
    return world


async def _case_objects(client: Client, cm: Actor, admin: Actor, world: World) -> None:
    case = await _json(
        await client.post(
            "/v1/cases",
            json={"report_ids": [world.ids["report_id"]], "title": "ZqXwv passports case"},
            headers=cm.headers,
        )
    )
    world.ids["case_id"] = case["id"]
    partner = await _json(
        await client.post(
            "/v1/partners",
            json={"kind": "legal_aid", "name": "ZqXwv Legal Aid", "contact": "zqxwv@example.org"},
            headers=admin.headers,
        )
    )
    world.ids["partner_id"] = partner["id"]
    version = case["version"]
    task = await _json(
        await client.post(
            f"/v1/cases/{case['id']}/tasks",
            json={"version": version, "monitor_id": world.ids["monitor_id"], "prompt": "ZqXwv ask"},
            headers=cm.headers,
        )
    )
    world.ids["task_id"] = task["id"]
    for state in ("triage", "open"):  # a referral needs an open case
        version = await _case_version(client, cm, case["id"])
        await _json(
            await client.post(
                f"/v1/cases/{case['id']}/transitions",
                json={"version": version, "to": state, "assign_to": str(cm.user_id)},
                headers=cm.headers,
            ),
            200,
        )
    version = await _case_version(client, cm, case["id"])
    referral = await _json(
        await client.post(
            f"/v1/cases/{case['id']}/referrals",
            json={
                "version": version,
                "partner_id": partner["id"],
                "override_justification": "ZqXwv urgent",
            },
            headers=cm.headers,
        )
    )
    world.ids["referral_id"] = referral["referral"]["id"]
    world.case_version = await _case_version(client, cm, case["id"])


async def _case_version(client: Client, cm: Actor, case_id: str) -> int:
    seen = await _json(await client.get(f"/v1/cases/{case_id}", headers=cm.headers), 200)
    version: int = seen["version"]
    return version


async def _risk_objects(client: Client, pool: asyncpg.Pool, admin: Actor, world: World) -> None:
    schedule = await _json(
        await client.post(
            "/v1/risk/schedules",
            json={"name": "ZqXwv nightly", "cron": "0 3 * * *"},
            headers=admin.headers,
        )
    )
    world.ids["schedule_id"] = schedule["id"]
    subscription = await _json(
        await client.post(
            "/v1/alerts/subscriptions", json={"name": "ZqXwv alerts"}, headers=admin.headers
        )
    )
    world.ids["subscription_id"] = subscription["id"]
    run = await client.post("/v1/risk/runs", json={}, headers=admin.headers)
    assert run.status_code in (200, 201, 202), run.text
    world.ids["run_id"] = run.json()["id"]
    # Alerts are raised only by the scanner: one is written as the scanner would write it.
    today = datetime.now(UTC).date()
    async with pool.acquire() as conn:
        alert_id = await conn.fetchval(
            """
            INSERT INTO alerts (org_id, kind, scope, cells, centre_cell, radius_km, window_start,
                window_end, observed, expected, ratio, llr, p_value, replicas,
                recurrence_interval_days, member_report_ids, method, params, seed, code_version,
                quality, first_run_id, last_run_id)
            VALUES ($1, 'space_time', 'ZqXwv-scope', ARRAY['871f1d489ffffff'], '871f1d489ffffff',
                2.0, $2, $3, 5, 1.0, 5.0, 4.2, 0.001, 999, 365.0, $4, 'ZqXwv-method', '{}'::jsonb,
                1, 'test', '{}'::jsonb, $5, $5)
            RETURNING id
            """,
            admin.org_id,
            today - timedelta(days=7),
            today,
            [uuid.UUID(world.ids["report_id"])],
            uuid.UUID(world.ids["run_id"]),
        )
    world.ids["alert_id"] = str(alert_id)


async def _matching_objects(pool: asyncpg.Pool, app: Litestar, admin: Actor, world: World) -> None:
    from server.worker import WorkerContext, run_worker_once

    context = WorkerContext(resources=app.state.resources)
    for _ in range(20):  # the matching jobs the pushes queued (incidents, persons, decisions)
        if await run_worker_once(pool, context=context) == 0:
            break
    async with pool.acquire() as conn:
        for name, table in (
            ("incident_id", "incidents"),
            ("person_id", "persons"),
            ("decision_id", "match_decisions"),
        ):
            found = await conn.fetchval(
                f"SELECT id FROM {table} WHERE org_id = $1 LIMIT 1",  # noqa: S608
                admin.org_id,
            )
            assert found is not None, f"the factory for {name} found no {table} row in org A"
            world.ids[name] = str(found)


async def _fresh_headers(pool: asyncpg.Pool, actor: Actor) -> dict[str, str]:
    # A session per call: B calling logout or revoking its sessions must not end the sweep.
    token = new_token()
    async with pool.acquire() as conn:
        await SessionRepository(conn).add(
            actor.org_id,
            actor.user_id,
            hash_token(token),
            datetime.now(UTC) + timedelta(hours=1),
            None,
        )
    return {"Authorization": f"Bearer {token}"}


async def _fingerprint(pool: asyncpg.Pool, org_id: uuid.UUID) -> dict[str, list[str]]:
    async with pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name = 'org_id'"
        )
        out = {}
        for t in tables:
            name = t["table_name"]
            if name == "staff_sessions":
                continue  # A's sessions' last_seen_at is not B's doing
            rows = await conn.fetch(
                f'SELECT x::text AS r FROM "{name}" x WHERE org_id = $1 ORDER BY 1',  # noqa: S608
                org_id,
            )
            out[name] = [r["r"] for r in rows]
    return out


def _body_for(method: str, path: str, world: World, phone_b: Phone, b_user: str) -> Any:
    v = world.case_version
    ids = world.ids
    bodies: dict[tuple[str, str], Callable[[], Any]] = {
        ("PATCH", "/v1/users/{user_id:uuid}"): lambda: {"is_active": False},
        ("POST", "/v1/devices/{device_id:uuid}/revoke"): lambda: {"reason": "lost"},
        ("POST", "/v1/conflicts/{conflict_id:uuid}/resolve"): lambda: {"resolution": "keep_server"},
        ("PUT", "/v1/registry/entities/{entity_id:uuid}"): lambda: {
            "kind": "employer", "legal_name": "Hijacked", "version": 1},
        ("POST", "/v1/cases/{case_id:uuid}/transitions"): lambda: {"version": v, "to": "triage"},
        ("PUT", "/v1/cases/{case_id:uuid}/assignee"): lambda: {
            "version": v, "assignee_id": b_user},
        ("PUT", "/v1/cases/{case_id:uuid}/priority"): lambda: {"version": v, "priority": "low"},
        ("POST", "/v1/cases/{case_id:uuid}/reports"): lambda: {
            "version": v, "report_ids": [ids["report_id"]]},
        ("POST", "/v1/cases/{case_id:uuid}/entities"): lambda: {
            "version": v, "entity_id": ids["entity_id"], "role": "employer"},
        ("POST", "/v1/cases/{case_id:uuid}/persons"): lambda: {
            "version": v, "person_id": ids["person_id"]},
        ("POST", "/v1/cases/{case_id:uuid}/notes"): lambda: {"version": v, "body": "x"},
        ("POST", "/v1/cases/{case_id:uuid}/tasks"): lambda: {
            "version": v, "monitor_id": ids["monitor_id"], "prompt": "x"},
        ("POST", "/v1/cases/{case_id:uuid}/tasks/{task_id:uuid}/cancel"): lambda: {"version": v},
        ("POST", "/v1/cases/{case_id:uuid}/consents"): lambda: {
            "version": v, "action": "granted", "purposes": ["follow_up"], "method": "verbal"},
        ("POST", "/v1/cases/{case_id:uuid}/referrals"): lambda: {
            "version": v, "partner_id": ids["partner_id"], "override_justification": "x"},
        ("PUT", "/v1/cases/{case_id:uuid}/referrals/{referral_id:uuid}"): lambda: {
            "version": v, "status": "declined"},
        ("PUT", "/v1/partners/{partner_id:uuid}"): lambda: {
            "kind": "legal_aid", "name": "Hijacked", "version": 1},
        ("PUT", "/v1/risk/schedules/{schedule_id:uuid}"): lambda: {
            "name": "h", "cron": "0 4 * * *", "version": 1},
        ("POST", "/v1/alerts/{alert_id:uuid}/acknowledge"): dict,
        ("POST", "/v1/alerts/{alert_id:uuid}/escalate"): dict,
        ("POST", "/v1/alerts/{alert_id:uuid}/dismiss"): lambda: {"reason": "x"},
        ("PUT", "/v1/alerts/{alert_id:uuid}/verdict"): lambda: {"verdict": "false_alarm"},
        ("POST", "/v1/sync/push"): lambda: batch(
            phone_b, [amend(phone_b, ids["report_id"], 1, {"severity": 1})]),
        ("POST", "/v1/sync/pull"): lambda: {"device_id": str(phone_b.device_id), "cursor": None},
        ("POST", "/v1/sync/attachments"): lambda: {
            "sha256": ids["sha256"], "size_bytes": 300, "media_type": "image/jpeg"},
    }  # fmt: skip
    make = bodies.get((method, path))
    return make() if make is not None else None


def _strip_echo(text: str) -> str:
    try:
        body = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text
    if isinstance(body, dict) and "type" in body and "instance" in body:
        body.pop("instance")  # a problem's instance echoes the request path
    return msgspec.json.encode(body).decode()


async def _call(
    client: Client, method: str, url: str, headers: dict[str, str], body: Any, streaming: bool
) -> tuple[int, str]:
    if method == "PUT" and url.startswith("/v1/sync/attachments/"):
        r = await client.put(url, content=b"B's bytes", headers=headers)
        return r.status_code, r.text
    if streaming:
        # The app and its pool live on the test client's portal loop: read the stream there.
        portal = client.blocking_portal
        return await anyio.to_thread.run_sync(portal.call, _read_stream, client.app, url, headers)
    r = await client.request(method, url, headers=headers, json=body)
    return r.status_code, r.text


async def _read_stream(app: Any, url: str, headers: dict[str, str]) -> tuple[int, str]:
    """What an endless (SSE) response sends in its first moments, straight over ASGI."""
    sent: list[bytes] = []
    status = 0
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            sent.append(message.get("body", b""))

    scope = get_scope(url, headers)
    with anyio.move_on_after(STREAM_SECONDS):  # polling with a deadline: the stream never ends
        await app(scope, receive, send)
    return status, b"".join(sent).decode("utf-8", "replace")


async def test_no_route_leaks_org_a_to_org_b(
    client: Client, pool: asyncpg.Pool, app_client: AsyncTestClient[Litestar]
) -> None:
    app = app_client.app
    world = await _build_org_a(client, pool, app)
    org_a = await _org_of(pool, world)
    before = await _fingerprint(pool, org_a)

    slug_b = f"iso-b-{uuid.uuid4().hex[:6]}"
    staff_b = {role: await make_actor(client, pool, role, org_slug=slug_b) for role in Role}
    monitor_b = await new_monitor(client, staff_b[Role.CASE_MANAGER])
    phone_b = await enroll(
        client, await enrollment_code(client, staff_b[Role.CASE_MANAGER], monitor_b)
    )
    await push(client, phone_b, [create(phone_b, report())])

    unknown = sorted(
        {p for _, path, _ in operations(app) for p in _PARAM.findall(path)} - set(world.ids)
    )
    assert unknown == [], f"add a factory to test_isolation.py for path parameters {unknown}"
    failures: list[str] = []
    calls = 0
    asked = ""
    for method, path, handler in operations(app):
        url = _PARAM.sub(lambda m: world.ids[m[1]], path)
        names_a_object = bool(_PARAM.search(path)) and not set(_PARAM.findall(path)) <= {
            "job", "fmt", "index"}  # fmt: skip
        query = {k: world.ids[k] for k in _query_names(handler, path) if k in world.ids}
        roles = sorted(declared_callers(handler))
        body = _body_for(method, path, world, phone_b, str(staff_b[Role.CASE_MANAGER].user_id))
        if path.endswith("/unlink"):
            query["version"] = str(world.case_version)
        streaming = "stream" in path
        for caller in roles:
            if caller == "device":
                headers = phone_b.headers
            elif caller == "public":
                headers = {}
            else:
                headers = await _fresh_headers(pool, staff_b[Role(caller)])
            full = url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
            status, text = await _call(client, method, full, headers, body, streaming)
            calls += 1
            where = f"{method} {url} as {caller}"
            if status >= 500:
                failures.append(f"{where}: {status}")
                continue
            visible = _strip_echo(text)
            # What B itself sent may come back (a push result names its report, B's audit log
            # records B's filters): no leak. A's texts and e-mails are never sent by B.
            asked += full + msgspec.json.encode(body).decode()
            leaked = sorted(m for m in world.markers if m in visible and m not in asked)
            if leaked:
                at = visible.index(leaked[0])
                failures.append(f"{where}: {status} leaks {leaked}: {visible[at - 300 : at + 60]}")
            if names_a_object and status != 404 and (method, path) not in NOT_404:
                if status == 422:
                    failures.append(
                        f"{where}: 422 (declare a valid body in _body_for): {text[:200]}"
                    )
                else:
                    failures.append(f"{where}: {status}, expected 404: {text[:200]}")
    assert failures == [], "\n".join(failures)
    assert calls > 50
    assert await _fingerprint(pool, org_a) == before


async def _org_of(pool: asyncpg.Pool, world: World) -> uuid.UUID:
    async with pool.acquire() as conn:
        org: uuid.UUID = await conn.fetchval(
            "SELECT org_id FROM reports WHERE id = $1", uuid.UUID(world.ids["report_id"])
        )
    return org


def _query_names(handler: Any, path: str) -> list[str]:
    in_path = set(_PARAM.findall(path))
    names = handler.parsed_fn_signature.parameters
    return [n for n in names if n.endswith("_id") and n not in in_path]
