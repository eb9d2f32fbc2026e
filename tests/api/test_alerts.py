"""Risk API: an on-demand scan finds an injected cluster and returns the unremarkable ones too;
alerts move through their lifecycle (illegal moves are problems); a continuing cluster updates
its alert; another organisation sees nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cases.accounts import Role
from server.resources import resources_of
from server.risk_jobs import HANDLERS
from server.worker import WorkerContext, run_worker_once
from tests.api.conftest import Actor, make_actor
from tests.api.test_alerts_data import (
    IDENTIFYING_KEYS,
    Seeded,
    add_cluster_reports,
    cluster_cell,
    json_keys,
    seed_reports,
)

pytestmark = pytest.mark.db

Client = AsyncTestClient[Litestar]


async def _seed(pool: asyncpg.Pool, actor: Actor, **kw: Any) -> Seeded:
    async with pool.acquire() as conn:
        return await seed_reports(conn, actor.org_id, **kw)


async def _scan(
    client: Client, actor: Actor, analysis_date: dt.date, *, raise_alerts: bool, **params: Any
) -> dict[str, Any]:
    body = {
        "params": {"study_days": 60, "analysis_date": str(analysis_date), "seed": 11, **params},
        "raise_alerts": raise_alerts,
    }
    r = await client.post("/v1/risk/runs", json=body, headers=actor.headers)
    assert r.status_code == 201, r.text
    run: dict[str, Any] = r.json()
    assert run["state"] == "succeeded", run["error"]
    return run


def _scan_of(run: dict[str, Any], kind: str, scope: str, role: str | None = None) -> Any:
    return next(
        s for s in run["results"] if s["kind"] == kind and s["scope"] == scope and s["role"] == role
    )


async def test_on_demand_scan_finds_the_injected_cluster_and_returns_the_rest(
    client: Client, pool: asyncpg.Pool
) -> None:
    analyst = await make_actor(client, pool, Role.ANALYST)
    seeded = await _seed(pool, analyst)
    run = await _scan(client, analyst, seeded.analysis_date, raise_alerts=False)

    space = _scan_of(run, "space_time", "all")
    top = space["clusters"][0]
    assert top["cells"] == [cluster_cell()]
    assert top["p_value"] <= 0.01 and top["above_threshold"]
    assert set(map(str, seeded.cluster)) <= set(top["member_report_ids"])
    assert top["observed"] >= len(seeded.cluster) and top["ratio"] > 3
    assert any(not c["above_threshold"] for c in space["clusters"])  # the rest come back too
    assert len(space["clusters"]) > 1
    coercion = _scan_of(run, "space_time", "group:coercion")
    assert coercion["clusters"][0]["cells"] == [cluster_cell()]
    surge = _scan_of(run, "entity_surge", "all", "recruiter")
    assert surge["clusters"][0]["entity_id"] == str(seeded.branch_id)
    assert surge["clusters"][0]["entity_path"] == [str(seeded.agency_id), str(seeded.branch_id)]
    assert run["alerts_raised"] == 0  # an on-demand run alarms nobody unless asked
    assert not json_keys(run["results"]) & IDENTIFYING_KEYS

    r = await client.get(f"/v1/risk/runs/{run['id']}", headers=analyst.headers)
    assert r.status_code == 200 and r.json()["results"] == run["results"]
    listed = await client.get("/v1/risk/runs", headers=analyst.headers)
    assert [x["id"] for x in listed.json()["items"]] == [run["id"]]


async def test_a_large_or_background_run_answers_202_and_a_worker_runs_it(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    seeded = await _seed(pool, admin, background=30, cluster=5)
    body = {
        "params": {"study_days": 60, "analysis_date": str(seeded.analysis_date), "replicas": 99},
        "background": True,
    }
    r = await client.post("/v1/risk/runs", json=body, headers=admin.headers)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/risk/runs/{r.json()['id']}"
    assert r.json()["state"] == "queued"
    context = WorkerContext(resources=resources_of(client.app.state))
    assert await run_worker_once(pool, HANDLERS, context=context) == 1
    done = await client.get(r.headers["location"], headers=admin.headers)
    assert done.json()["state"] == "succeeded" and done.json()["results"]


async def test_scan_parameters_are_validated(client: Client, pool: asyncpg.Pool) -> None:
    analyst = await make_actor(client, pool, Role.ANALYST)
    for params in ({"h3_resolution": 20}, {"categories": ["FL.NOT_A_THING"]}, {"bogus": 1}):
        r = await client.post("/v1/risk/runs", json={"params": params}, headers=analyst.headers)
        assert r.status_code == 422, r.text
        assert r.json()["type"] == "urn:fairwatch:problem:validation"
    manager = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=None)
    r = await client.post("/v1/risk/runs", json={}, headers=manager.headers)
    assert r.status_code == 403


async def test_alert_lifecycle_and_illegal_transitions(client: Client, pool: asyncpg.Pool) -> None:
    analyst = await make_actor(client, pool, Role.ANALYST)
    seeded = await _seed(pool, analyst)
    run = await _scan(client, analyst, seeded.analysis_date, raise_alerts=True)
    assert run["alerts_raised"] >= 2

    r = await client.get("/v1/alerts", params={"kind": "space_time"}, headers=analyst.headers)
    alerts = r.json()["items"]
    alert = next(a for a in alerts if a["scope"] == "all")
    assert alert["status"] == "new" and alert["cells"] == [cluster_cell()]
    assert alert["recurrence_interval_days"] >= 100
    # Run-level figures: 4 scans could find a cluster (all and coercion, a recruiter surge scan
    # for each; no report is in the other groups or names an employer), so each ran
    # 4 * (999 + 1) - 1 replicas and the alert's p is 4 times the scan's own.
    assert alert["scans_in_run"] == 4 and alert["replicas"] == 3999
    assert alert["p_value"] == pytest.approx(4 * alert["scan_p_value"])
    assert alert["scan_recurrence_interval_days"] == pytest.approx(1 / alert["scan_p_value"])
    assert alert["recurrence_interval_days"] == pytest.approx(1 / alert["p_value"])
    assert alert["seed"] == 11 and alert["method"].startswith("space-time permutation")
    assert alert["quality"]["monitors"] == 4 and "flags" in alert["quality"]
    assert alert["countries"] == ["QA"]
    assert {e["entity_id"] for e in alert["linked_entities"]} >= {str(seeded.branch_id)}
    assert not json_keys(alert) & IDENTIFYING_KEYS
    url = f"/v1/alerts/{alert['id']}"

    r = await client.post(f"{url}/acknowledge", json={}, headers=analyst.headers)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    r = await client.post(f"{url}/acknowledge", json={}, headers=analyst.headers)
    assert r.status_code == 409
    assert r.json()["type"] == "urn:fairwatch:problem:alert-transition-not-allowed"
    r = await client.post(f"{url}/dismiss", json={}, headers=analyst.headers)
    assert r.status_code == 422  # a dismissal needs a reason
    r = await client.post(f"{url}/escalate", json={"version": 1}, headers=analyst.headers)
    assert r.status_code == 409  # stale version
    unknown_case = "5b0c9a34-9f0e-4c47-8f43-6f4f3f5a6d10"
    r = await client.post(
        f"{url}/escalate", json={"case_id": unknown_case}, headers=analyst.headers
    )
    assert r.status_code == 404  # only a case of this organisation can be linked
    r = await client.post(f"{url}/escalate", json={}, headers=analyst.headers)
    assert r.status_code == 200
    assert r.json()["status"] == "escalated"
    case_id = r.json()["case_id"]
    assert case_id is not None  # escalating opened a case for the alert's reports
    async with pool.acquire() as conn:
        in_case = {
            str(x["report_id"])
            for x in await conn.fetch(
                "SELECT report_id FROM case_reports WHERE case_id = $1", uuid.UUID(case_id)
            )
        }
    assert in_case == set(alert["member_report_ids"])
    r = await client.post(f"{url}/dismiss", json={"reason": "dup"}, headers=analyst.headers)
    assert r.status_code == 409
    r = await client.put(
        f"{url}/verdict",
        json={"verdict": "true_alarm", "note": "confirmed"},
        headers=analyst.headers,
    )
    assert r.status_code == 200 and r.json()["verdict"] == "true_alarm"

    other = next(a for a in alerts if a["id"] != alert["id"])
    r = await client.post(
        f"/v1/alerts/{other['id']}/dismiss", json={"reason": "one monitor"}, headers=analyst.headers
    )
    assert r.status_code == 200 and r.json()["dismiss_reason"] == "one monitor"
    await client.put(
        f"/v1/alerts/{other['id']}/verdict",
        json={"verdict": "false_alarm"},
        headers=analyst.headers,
    )
    r = await client.get("/v1/alerts/precision", headers=analyst.headers)
    space = next(p for p in r.json() if p["kind"] == "space_time")
    assert space["true_alarms"] == 1 and space["false_alarms"] == 1 and space["precision"] == 0.5

    history = (await client.get(f"{url}/history", headers=analyst.headers)).json()
    assert [h["event"] for h in history] == [
        "alert.created", "alert.acknowledged", "alert.escalated", "alert.verdict",
    ]  # fmt: skip


async def test_a_continuing_cluster_updates_its_alert(client: Client, pool: asyncpg.Pool) -> None:
    analyst = await make_actor(client, pool, Role.ANALYST)
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    seeded = await _seed(pool, analyst, analysis_date=day)
    await _scan(client, analyst, day, raise_alerts=True, entity_scan=False)
    first = [
        a
        for a in (await client.get("/v1/alerts", headers=analyst.headers)).json()["items"]
        if a["scope"] == "all"
    ]
    assert len(first) == 1

    next_day = day + dt.timedelta(days=1)
    async with pool.acquire() as conn:
        more = await add_cluster_reports(conn, seeded, next_day, 6)
    run = await _scan(client, analyst, next_day, raise_alerts=True, entity_scan=False)

    assert run["alerts_raised"] == 0 and run["alerts_updated"] >= 1
    alerts = [
        a
        for a in (await client.get("/v1/alerts", headers=analyst.headers)).json()["items"]
        if a["scope"] == "all"
    ]
    assert [a["id"] for a in alerts] == [first[0]["id"]]
    updated = alerts[0]
    assert updated["version"] == 2 and updated["last_run_id"] == run["id"]
    assert updated["window_end"] == str(next_day)
    assert set(map(str, more)) <= set(updated["member_report_ids"])
    assert set(first[0]["member_report_ids"]) <= set(updated["member_report_ids"])
    history = (
        await client.get(f"/v1/alerts/{updated['id']}/history", headers=analyst.headers)
    ).json()
    assert [h["event"] for h in history] == ["alert.created", "alert.updated"]
    assert history[0]["alert"]["observed"] == first[0]["observed"]


async def test_another_organisation_sees_nothing(client: Client, pool: asyncpg.Pool) -> None:
    analyst = await make_actor(client, pool, Role.ANALYST)
    seeded = await _seed(pool, analyst, background=60, cluster=10)
    run = await _scan(client, analyst, seeded.analysis_date, raise_alerts=True, replicas=199)
    alert = (await client.get("/v1/alerts", headers=analyst.headers)).json()["items"][0]

    stranger = await make_actor(client, pool, Role.ORG_ADMIN)
    assert (await client.get("/v1/alerts", headers=stranger.headers)).json()["items"] == []
    for path in (f"/v1/alerts/{alert['id']}", f"/v1/risk/runs/{run['id']}"):
        r = await client.get(path, headers=stranger.headers)
        assert r.status_code == 404, path
    r = await client.post(
        f"/v1/alerts/{alert['id']}/acknowledge", json={}, headers=stranger.headers
    )
    assert r.status_code == 404
    own = await _scan(client, stranger, seeded.analysis_date, raise_alerts=False)
    assert own["report_count"] == 0
    assert all(s["clusters"] == [] for s in own["results"])


async def test_org_admin_manages_schedules_and_threshold(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    r = await client.post(
        "/v1/risk/schedules",
        json={"name": "nightly", "cron": "0 3 * * *", "params": {"replicas": 499}},
        headers=admin.headers,
    )
    assert r.status_code == 201, r.text
    schedule = r.json()
    assert schedule["params"]["replicas"] == 499
    r = await client.post(
        "/v1/risk/schedules", json={"name": "bad", "cron": "every night"}, headers=admin.headers
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cron"
    r = await client.put(
        f"/v1/risk/schedules/{schedule['id']}",
        json={"name": "nightly", "cron": "0 4 * * *", "enabled": False, "version": 1},
        headers=admin.headers,
    )
    assert r.status_code == 200 and r.json()["version"] == 2 and not r.json()["enabled"]
    r = await client.put(
        "/v1/risk/settings", json={"alert_min_recurrence_days": 365}, headers=admin.headers
    )
    assert r.status_code == 200
    r = await client.get("/v1/risk/settings", headers=admin.headers)
    assert r.json() == {"alert_min_recurrence_days": 365}
    analyst = await make_actor(client, pool, Role.ANALYST)
    assert (await client.get("/v1/risk/schedules", headers=analyst.headers)).status_code == 403
    r = await client.delete(f"/v1/risk/schedules/{schedule['id']}", headers=admin.headers)
    assert r.status_code == 204


async def test_k_nearest_cells_bounds_every_circle(client: Client, pool: asyncpg.Pool) -> None:
    analyst = await make_actor(client, pool, Role.ANALYST)
    seeded = await _seed(pool, analyst)
    run = await _scan(
        client, analyst, seeded.analysis_date, raise_alerts=False, k_nearest=2, entity_scan=False
    )
    clusters = _scan_of(run, "space_time", "all")["clusters"]
    assert clusters
    assert all(len(c["cells"]) <= 2 for c in clusters)
    assert run["params"]["k_nearest"] == 2
