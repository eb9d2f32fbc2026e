"""Risk detection API: on-demand scans and the run log, per-organisation schedules and alert
threshold, alerts and their lifecycle, analysts' subscriptions and webhook deliveries, and the
live stream of alert events (server-sent events)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
import h3
import msgspec
from litestar import Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from cases.accounts import Role
from cases.taxonomy import Taxonomy
from server.auth import ANY_STAFF, Caller, requires
from server.pagination import Page, decode_page_token, page_of
from server.problems import FieldError, ProblemError, invalid_request
from server.resources import Db, resources_of
from server.scheduler import cron_trigger
from server.settings import Environment
from storage.alert_stream import StreamPosition, read_events, start_position
from storage.db import connect
from storage.jobs import JobQueue
from storage.queries import Q
from storage.risk import RiskRepository, RiskRun, RiskSettings, ScanParams, Schedule, ScheduleDraft
from storage.risk_alerts import (
    CHANNEL,
    AlertStatus,
    AlertView,
    IllegalTransition,
    alert_history,
    get_alert,
    list_alerts,
    precision,
    set_verdict,
    transition,
)
from storage.risk_delivery import Delivery, Subscription, SubscriptionDraft, SubscriptionRepository
from storage.risk_runs import execute_run, resolve_params

__all__ = ["ROUTES", "SYNC_MAX_REPORTS"]

SYNC_MAX_REPORTS = 20_000
"""On-demand runs over at most this many reports answer at once (seconds); larger ones, 202."""
KEEPALIVE_SECONDS = 15.0
_SCANNERS = (Role.ANALYST, Role.ORG_ADMIN)
_DECIDERS = (Role.ANALYST, Role.ORG_ADMIN, Role.CASE_MANAGER)


class RunRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    params: ScanParams = ScanParams()
    raise_alerts: bool = False
    """Raise or update alerts from this run (off by default: a replay should not alarm)."""
    background: bool = False
    """Always queue the run (202) instead of answering at once when it is small."""


class Escalation(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    case_id: uuid.UUID | None = None
    version: int | None = None


class Dismissal(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    version: int | None = None


class Acknowledgement(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    version: int | None = None


class VerdictBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    verdict: Literal["true_alarm", "false_alarm"]
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class ScheduleUpdate(ScheduleDraft, frozen=True, kw_only=True):
    version: Annotated[int, msgspec.Meta(ge=1)]


def _check_categories(taxonomy: Taxonomy, codes: list[str] | None, field: str) -> None:
    unknown = [c for c in codes or [] if c not in taxonomy]
    if unknown:
        raise invalid_request(
            f"unknown categories: {', '.join(unknown)}",
            errors=[FieldError(field=field, message=f"unknown category {c}") for c in unknown],
        )


def _check_cron(cron: str) -> None:
    try:
        cron_trigger(cron)
    except ValueError as exc:
        raise invalid_request(
            f"cron: {exc}",
            errors=[FieldError(field="cron", message=str(exc))],
        ) from None


# On-demand scans and the run log


@post(
    "/v1/risk/runs",
    guards=[requires(*_SCANNERS)],
    tags=["risk"],
    summary="Run the scans now; small runs answer with every cluster, large ones 202 + run id",
)
async def start_run(
    principal: Caller, db: Db, state: State, data: JSONBody[RunRequest]
) -> Response[RiskRun]:
    res = resources_of(state)
    _check_categories(res.taxonomy, data.params.categories, "params.categories")
    params = resolve_params(data.params, today=datetime.now(UTC).date())
    assert params.analysis_date is not None
    end = datetime.combine(params.analysis_date + timedelta(days=1), datetime.min.time(), UTC)
    size = await db.fetchval(
        Q.risk_count_reports, principal.org_id, end - timedelta(days=params.study_days), end
    )
    repo = RiskRepository(db)
    run = await repo.add_run(
        principal.org_id, params, trigger="api", raise_alerts=data.raise_alerts,
        requested_by=principal.user_id,
    )  # fmt: skip
    if data.background or size > SYNC_MAX_REPORTS:
        await JobQueue(db).enqueue(
            "risk.scan", {"run_id": str(run.id)}, org_id=principal.org_id,
            dedupe_key=str(run.id), max_attempts=3,
        )  # fmt: skip
        return Response(
            run, status_code=HTTP_202_ACCEPTED, headers={"Location": f"/v1/risk/runs/{run.id}"}
        )
    done = await execute_run(db, principal.org_id, run.id, res.taxonomy)
    return Response(done, status_code=HTTP_201_CREATED)


@get("/v1/risk/runs", guards=[requires(*ANY_STAFF)], tags=["risk"])
async def list_runs(
    principal: Caller,
    db: Db,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    page_token: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Page[RiskRun]:
    after = decode_page_token(page_token, tuple[datetime, uuid.UUID]) if page_token else None
    items = await RiskRepository(db).list_runs(principal.org_id, after=after, limit=limit + 1)
    return page_of(items, limit, lambda x: (x.created_at, x.id))


@get("/v1/risk/runs/{run_id:uuid}", guards=[requires(*ANY_STAFF)], tags=["risk"])
async def get_run(principal: Caller, db: Db, run_id: FromPath[uuid.UUID]) -> RiskRun:
    return await RiskRepository(db).get_run(principal.org_id, run_id)


# Settings and schedules (organisation administrators)


@get("/v1/risk/settings", guards=[requires(*ANY_STAFF)], tags=["risk"])
async def get_risk_settings(principal: Caller, db: Db) -> RiskSettings:
    return await RiskRepository(db).settings(principal.org_id)


@put("/v1/risk/settings", guards=[requires(Role.ORG_ADMIN)], tags=["risk"])
async def put_risk_settings(
    principal: Caller, db: Db, data: JSONBody[RiskSettings]
) -> RiskSettings:
    if data.alert_min_recurrence_days < 1:
        raise invalid_request(
            errors=[FieldError(field="alert_min_recurrence_days", message="must be >= 1")],
        )
    return await RiskRepository(db).save_settings(principal.org_id, data)


@get("/v1/risk/schedules", guards=[requires(Role.ORG_ADMIN)], tags=["risk"])
async def list_schedules(principal: Caller, db: Db) -> list[Schedule]:
    return await RiskRepository(db).list_schedules(principal.org_id)


@post(
    "/v1/risk/schedules",
    guards=[requires(Role.ORG_ADMIN)],
    status_code=HTTP_201_CREATED,
    tags=["risk"],
    summary="Add a scan schedule (crontab, UTC); an org with none scans nightly by default",
)
async def create_schedule(
    principal: Caller, db: Db, state: State, data: JSONBody[ScheduleDraft]
) -> Schedule:
    _check_cron(data.cron)
    _check_categories(resources_of(state).taxonomy, data.params.categories, "params.categories")
    return await RiskRepository(db).add_schedule(principal.org_id, data)


@put("/v1/risk/schedules/{schedule_id:uuid}", guards=[requires(Role.ORG_ADMIN)], tags=["risk"])
async def update_schedule(
    principal: Caller,
    db: Db,
    state: State,
    schedule_id: FromPath[uuid.UUID],
    data: JSONBody[ScheduleUpdate],
) -> Schedule:
    _check_cron(data.cron)
    _check_categories(resources_of(state).taxonomy, data.params.categories, "params.categories")
    draft = ScheduleDraft(name=data.name, cron=data.cron, enabled=data.enabled, params=data.params)
    return await RiskRepository(db).update_schedule(
        principal.org_id, schedule_id, draft, data.version
    )


@delete(
    "/v1/risk/schedules/{schedule_id:uuid}",
    guards=[requires(Role.ORG_ADMIN)],
    status_code=HTTP_204_NO_CONTENT,
    tags=["risk"],
)
async def delete_schedule(principal: Caller, db: Db, schedule_id: FromPath[uuid.UUID]) -> None:
    await RiskRepository(db).delete_schedule(principal.org_id, schedule_id)


# Alerts


@get("/v1/alerts", guards=[requires(*ANY_STAFF)], tags=["alerts"])
async def list_org_alerts(
    principal: Caller,
    db: Db,
    status: FromQuery[AlertStatus | None] = None,
    kind: FromQuery[Literal["space_time", "entity_surge"] | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    page_token: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Page[AlertView]:
    after = decode_page_token(page_token, tuple[datetime, uuid.UUID]) if page_token else None
    items = await list_alerts(
        db, principal.org_id, status=status, kind=kind, after=after, limit=limit + 1
    )
    return page_of(items, limit, lambda x: (x.created_at, x.id))


@get("/v1/alerts/{alert_id:uuid}", guards=[requires(*ANY_STAFF)], tags=["alerts"])
async def get_org_alert(principal: Caller, db: Db, alert_id: FromPath[uuid.UUID]) -> AlertView:
    return await get_alert(db, principal.org_id, alert_id)


@get("/v1/alerts/{alert_id:uuid}/history", guards=[requires(*ANY_STAFF)], tags=["alerts"])
async def get_alert_history(
    principal: Caller, db: Db, alert_id: FromPath[uuid.UUID]
) -> list[dict[str, Any]]:
    return await alert_history(db, principal.org_id, alert_id)


async def _move(
    principal: Caller,
    db: Db,
    alert_id: uuid.UUID,
    target: AlertStatus,
    *,
    version: int | None,
    reason: str | None = None,
    case_id: uuid.UUID | None = None,
) -> AlertView:
    try:
        return await transition(
            db, principal.org_id, alert_id, target, principal.user_id,
            reason=reason, case_id=case_id, expected_version=version,
        )  # fmt: skip
    except IllegalTransition as exc:
        raise ProblemError(
            409, "alert-transition-not-allowed", "The alert cannot make this transition",
            str(exc), status_now=exc.current, requested=exc.target,
        ) from None  # fmt: skip


@post(
    "/v1/alerts/{alert_id:uuid}/acknowledge",
    guards=[requires(*_DECIDERS)],
    status_code=200,
    tags=["alerts"],
    summary="Acknowledge a new alert, or reopen a dismissed one",
)
async def acknowledge_alert(
    principal: Caller, db: Db, alert_id: FromPath[uuid.UUID], data: JSONBody[Acknowledgement]
) -> AlertView:
    return await _move(principal, db, alert_id, "acknowledged", version=data.version)


@post(
    "/v1/alerts/{alert_id:uuid}/escalate",
    guards=[requires(*_DECIDERS)],
    status_code=200,
    tags=["alerts"],
    summary="Escalate to a case (link it with case_id)",
)
async def escalate_alert(
    principal: Caller, db: Db, alert_id: FromPath[uuid.UUID], data: JSONBody[Escalation]
) -> AlertView:
    return await _move(
        principal, db, alert_id, "escalated", version=data.version, case_id=data.case_id
    )


@post(
    "/v1/alerts/{alert_id:uuid}/dismiss",
    guards=[requires(*_DECIDERS)],
    status_code=200,
    tags=["alerts"],
)
async def dismiss_alert(
    principal: Caller, db: Db, alert_id: FromPath[uuid.UUID], data: JSONBody[Dismissal]
) -> AlertView:
    return await _move(
        principal, db, alert_id, "dismissed", version=data.version, reason=data.reason
    )


@put(
    "/v1/alerts/{alert_id:uuid}/verdict",
    guards=[requires(*_DECIDERS)],
    tags=["alerts"],
    summary="Record whether the alert was a true or a false alarm (for measuring precision)",
)
async def put_alert_verdict(
    principal: Caller, db: Db, alert_id: FromPath[uuid.UUID], data: JSONBody[VerdictBody]
) -> AlertView:
    return await set_verdict(
        db, principal.org_id, alert_id, data.verdict, data.note, principal.user_id
    )


@get("/v1/alerts/precision", guards=[requires(*ANY_STAFF)], tags=["alerts"])
async def get_alert_precision(principal: Caller, db: Db) -> list[dict[str, Any]]:
    return await precision(db, principal.org_id)


# Subscriptions and webhook deliveries (each staff member manages their own)


@post(
    "/v1/alerts/subscriptions",
    guards=[requires(*ANY_STAFF)],
    status_code=HTTP_201_CREATED,
    tags=["alerts"],
    summary="Subscribe to alerts; with a webhook_url the signing secret is shown once",
)
async def create_subscription(
    principal: Caller, db: Db, state: State, data: JSONBody[SubscriptionDraft]
) -> Subscription:
    res = resources_of(state)
    _check_categories(res.taxonomy, data.categories, "categories")
    bad_cells = [c for c in data.cells if not h3.is_valid_cell(c)]
    if bad_cells:
        raise invalid_request(
            "cells must be H3 cells",
            errors=[FieldError(field="cells", message=f"not an H3 cell: {c}") for c in bad_cells],
        )
    url = data.webhook_url
    if url and res.settings.environment == Environment.PRODUCTION and url.startswith("http:"):
        raise invalid_request(
            "webhooks need https",
            errors=[FieldError(field="webhook_url", message="must use https in production")],
        )
    async with db.transaction():
        return await SubscriptionRepository(db, res.keyring).add(
            principal.org_id, principal.user_id, data
        )


@get("/v1/alerts/subscriptions", guards=[requires(*ANY_STAFF)], tags=["alerts"])
async def list_subscriptions(principal: Caller, db: Db, state: State) -> list[Subscription]:
    repo = SubscriptionRepository(db, resources_of(state).keyring)
    return await repo.of_user(principal.org_id, principal.user_id)


@delete(
    "/v1/alerts/subscriptions/{subscription_id:uuid}",
    guards=[requires(*ANY_STAFF)],
    status_code=HTTP_204_NO_CONTENT,
    tags=["alerts"],
)
async def delete_subscription(
    principal: Caller, db: Db, state: State, subscription_id: FromPath[uuid.UUID]
) -> None:
    repo = SubscriptionRepository(db, resources_of(state).keyring)
    await repo.delete(principal.org_id, principal.user_id, subscription_id)


@get(
    "/v1/alerts/subscriptions/{subscription_id:uuid}/deliveries",
    guards=[requires(*ANY_STAFF)],
    tags=["alerts"],
)
async def list_deliveries(
    principal: Caller,
    db: Db,
    state: State,
    subscription_id: FromPath[uuid.UUID],
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
) -> list[Delivery]:
    repo = SubscriptionRepository(db, resources_of(state).keyring)
    await repo.get(principal.org_id, principal.user_id, subscription_id)
    return await repo.deliveries(principal.org_id, subscription_id, limit)


# Live stream


async def _alert_events(
    dsn: str, org_id: uuid.UUID, after: StreamPosition | None
) -> AsyncGenerator[ServerSentEventMessage, None]:
    # A connection of its own: LISTEN needs a session for as long as the client stays.
    conn = await connect(dsn)
    wake = asyncio.Event()

    def notified(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        if payload == str(org_id):
            wake.set()

    try:
        await conn.add_listener(CHANNEL, notified)
        position = after if after is not None else await start_position(conn, org_id)
        yield ServerSentEventMessage(data=None, comment="fairwatch alert stream", retry=5000)
        while True:
            wake.clear()
            events, position, more = await read_events(conn, org_id, position, 100)
            for item in events:
                yield ServerSentEventMessage(data=item.data, event=item.event, id=item.id)
            if more:
                continue
            try:
                await asyncio.wait_for(wake.wait(), timeout=KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
    finally:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            await conn.close()


@get(
    "/v1/alerts/stream",
    guards=[requires(*ANY_STAFF)],
    tags=["alerts"],
    summary="Server-sent events of the organisation's alerts (created, updated, status changes)",
)
async def stream_alerts(
    principal: Caller,
    state: State,
    last_event_id: Annotated[
        str | None, HeaderParameter(name="Last-Event-ID", max_length=64, required=False)
    ] = None,
) -> ServerSentEvent:
    """Each event's id is where a reconnect resumes (``Last-Event-ID``)."""
    after = None
    if last_event_id is not None:
        after = StreamPosition.parse(last_event_id)
        if after is None:
            raise invalid_request(
                "Last-Event-ID: not an id this stream sent",
                errors=[FieldError("Last-Event-ID", "not an id this stream sent", "header")],
            )
    dsn = resources_of(state).dsn
    return ServerSentEvent(_alert_events(dsn, principal.org_id, after))


ROUTES: list[Any] = [
    start_run,
    list_runs,
    get_run,
    get_risk_settings,
    put_risk_settings,
    list_schedules,
    create_schedule,
    update_schedule,
    delete_schedule,
    list_org_alerts,
    get_org_alert,
    get_alert_history,
    acknowledge_alert,
    escalate_alert,
    dismiss_alert,
    put_alert_verdict,
    get_alert_precision,
    create_subscription,
    list_subscriptions,
    delete_subscription,
    list_deliveries,
    stream_alerts,
]
