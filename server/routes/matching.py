"""Matching for the case team: review queues with explanations, accept, reject, undo (unmerge),
and the incident, person and entity views that matching builds."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from cases.accounts import Role
from cases.matching.jobs import JOB_NAMES, JobName
from server.auth import ANY_STAFF, Caller, audit_staff, requires
from server.pagination import Page, decode_page_token, page_of
from server.problems import FieldError, ProblemError, invalid_request
from server.resources import Db
from storage.db import KEYSET_START
from storage.errors import NotFound
from storage.jobs import JobQueue
from storage.match_settings import (
    MergeNotApplicable,
    PinnedThresholds,
    ThresholdSetting,
    ThresholdsInForce,
    clear_thresholds,
    pin_thresholds,
    thresholds_in_force,
)
from storage.matching import DecisionConflict, decide, undo_decision
from storage.queries import Q

__all__ = ["ROUTES"]

_CASE_TEAM = (Role.ORG_ADMIN, Role.CASE_MANAGER)
Job = JobName
Status = Literal["pending_review", "auto_linked", "accepted", "rejected", "undone"]


class Decision(msgspec.Struct, frozen=True):
    id: uuid.UUID
    job: str
    subject_id: str
    candidate_id: str
    probability: float
    total_weight: float
    explanation: dict[str, Any]
    suggestion: str
    status: str
    decided_by: str
    decided_at: datetime
    model_version: str


class Member(msgspec.Struct, frozen=True):
    report_id: uuid.UUID
    linked_at: datetime
    decision_id: uuid.UUID | None
    occurred_at: datetime
    received_at: datetime
    categories: list[str] | None = None
    role: str | None = None


class Group(msgspec.Struct, frozen=True):
    id: uuid.UUID
    members: list[Member]


class EntityGroup(msgspec.Struct, frozen=True):
    id: uuid.UUID
    members: list[Member]
    cases: list[uuid.UUID]


class Cluster(msgspec.Struct, frozen=True):
    id: uuid.UUID
    members: list[str]


def _decision(row: Any) -> Decision:
    data = dict(row)
    data["explanation"] = msgspec.json.decode(data["explanation"])
    return msgspec.convert(data, Decision)


@get(
    "/v1/matching/decisions",
    guards=[requires(*_CASE_TEAM)],
    tags=["matching"],
    summary="Matching decisions; status=pending_review is the review queue",
    description=(
        "The review queue leaves out a suggestion whose two sides are together already (one "
        "incident, one person, the mention linked to that entity), until they are split again."
    ),
)
async def list_decisions(
    principal: Caller,
    db: Db,
    job: FromQuery[Job | None] = None,
    status: FromQuery[Status | None] = "pending_review",
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    page_token: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Page[Decision]:
    after = decode_page_token(page_token, tuple[datetime, uuid.UUID]) if page_token else None
    start = after or KEYSET_START
    rows = await db.fetch(Q.list_decisions, principal.org_id, job, status, *start, limit + 1)
    items = [_decision(r) for r in rows]
    return page_of(items, limit, lambda x: (x.decided_at, x.id))


@get(
    "/v1/matching/decisions/{decision_id:uuid}",
    guards=[requires(*_CASE_TEAM)],
    tags=["matching"],
    summary="One decision with its field-by-field explanation",
)
async def get_decision(principal: Caller, db: Db, decision_id: FromPath[uuid.UUID]) -> Decision:
    return await _load(db, principal.org_id, decision_id)


async def _load(db: Db, org_id: uuid.UUID, decision_id: uuid.UUID) -> Decision:
    row = await db.fetchrow(Q.get_decision, org_id, decision_id)
    if row is None:
        raise NotFound("decision", decision_id)
    return _decision(row)


async def _decide(principal: Caller, db: Db, decision_id: uuid.UUID, accept: bool) -> Decision:
    try:
        async with db.transaction():
            await decide(
                db, principal.org_id, decision_id, accept=accept, user_id=principal.user_id
            )
            action = "match.accept" if accept else "match.reject"
            await audit_staff(db, principal, action, "match_decision", decision_id)
    except DecisionConflict as exc:
        raise ProblemError(
            409, "decision-state", "The decision cannot change now", str(exc)
        ) from None
    return await _load(db, principal.org_id, decision_id)


@post(
    "/v1/matching/decisions/{decision_id:uuid}/accept",
    guards=[requires(*_CASE_TEAM)],
    status_code=200,
    tags=["matching"],
    summary="Accept a suggested match: the link is made and kept as a label",
)
async def accept_decision(principal: Caller, db: Db, decision_id: FromPath[uuid.UUID]) -> Decision:
    return await _decide(principal, db, decision_id, True)


@post(
    "/v1/matching/decisions/{decision_id:uuid}/reject",
    guards=[requires(*_CASE_TEAM)],
    status_code=200,
    tags=["matching"],
    summary="Reject a suggested match (kept as a label)",
)
async def reject_decision(principal: Caller, db: Db, decision_id: FromPath[uuid.UUID]) -> Decision:
    return await _decide(principal, db, decision_id, False)


@post(
    "/v1/matching/decisions/{decision_id:uuid}/undo",
    guards=[requires(*_CASE_TEAM)],
    status_code=200,
    tags=["matching"],
    summary="Unmerge: undo a link and restore exactly what it replaced",
)
async def undo(principal: Caller, db: Db, decision_id: FromPath[uuid.UUID]) -> Decision:
    try:
        async with db.transaction():
            await undo_decision(db, principal.org_id, decision_id, user_id=principal.user_id)
            await audit_staff(db, principal, "match.undo", "match_decision", decision_id)
    except DecisionConflict as exc:
        raise ProblemError(
            409, "decision-state", "The decision cannot change now", str(exc)
        ) from None
    return await _load(db, principal.org_id, decision_id)


@get(
    "/v1/incidents/{incident_id:uuid}",
    guards=[requires(*ANY_STAFF)],
    tags=["matching"],
    summary="An incident and its member reports",
)
async def get_incident(principal: Caller, db: Db, incident_id: FromPath[uuid.UUID]) -> Group:
    if not await db.fetchval(Q.incident_exists, principal.org_id, incident_id):
        raise NotFound("incident", incident_id)
    rows = await db.fetch(Q.incident_members_list, principal.org_id, incident_id)
    return Group(id=incident_id, members=[msgspec.convert(dict(r), Member) for r in rows])


@get(
    "/v1/persons/{person_id:uuid}",
    guards=[requires(Role.CASE_MANAGER)],
    tags=["matching"],
    summary="The reports that name one worker (the read is audited)",
)
async def get_person(principal: Caller, db: Db, person_id: FromPath[uuid.UUID]) -> Group:
    if not await db.fetchval(Q.person_exists, principal.org_id, person_id):
        raise NotFound("person", person_id)
    rows = await db.fetch(Q.person_reports_list, principal.org_id, person_id)
    await audit_staff(db, principal, "person.read", "person", person_id)
    return Group(id=person_id, members=[msgspec.convert(dict(r), Member) for r in rows])


@get(
    "/v1/registry/entities/{entity_id:uuid}/reports",
    guards=[requires(*ANY_STAFF)],
    tags=["matching"],
    summary="Reports and cases linked to a registry entity",
)
async def entity_reports(principal: Caller, db: Db, entity_id: FromPath[uuid.UUID]) -> EntityGroup:
    if not await db.fetchval(Q.parent_exists, principal.org_id, entity_id):
        raise NotFound("entity", entity_id)
    rows = await db.fetch(Q.entity_reports_list, principal.org_id, entity_id)
    cases = [r["case_id"] for r in await db.fetch(Q.entity_cases, principal.org_id, entity_id)]
    members = [msgspec.convert(dict(r), Member) for r in rows]
    return EntityGroup(id=entity_id, members=members, cases=cases)


@get(
    "/v1/matching/clusters",
    guards=[requires(*_CASE_TEAM)],
    tags=["matching"],
    summary="Current incident, person or entity clusters (for audits and evaluation)",
)
async def clusters(
    principal: Caller,
    db: Db,
    job: FromQuery[Job],
    min_size: Annotated[int, QueryParameter(ge=1, le=1000)] = 2,
    limit: Annotated[int, QueryParameter(ge=1, le=5000)] = 1000,
) -> list[Cluster]:
    if job == "person" and principal.role is not Role.CASE_MANAGER:
        raise ProblemError(403, "forbidden", "Not allowed for your role", "persons are sensitive")
    query = {
        "incident": Q.incident_clusters,
        "person": Q.person_clusters,
        "entity": Q.entity_clusters,
    }[job]
    rows = await db.fetch(query, principal.org_id, min_size, limit)
    return [Cluster(id=r[0], members=[str(m) for m in r[1]]) for r in rows]


class RefitQueued(msgspec.Struct, frozen=True):
    job: str
    queued: bool


@post(
    "/v1/matching/{job:str}/refit",
    guards=[requires(*_CASE_TEAM)],
    status_code=202,
    tags=["matching"],
    summary="Refit this job's model from your decisions (or by EM on your data), in the background",
)
async def refit(principal: Caller, db: Db, job: FromPath[str]) -> RefitQueued:
    queued = await JobQueue(db).enqueue(
        "matching.refit",
        {"job": _job(job)},
        org_id=principal.org_id,
        dedupe_key=f"{principal.org_id}:{job}",
    )
    return RefitQueued(job=job, queued=queued is not None)


def _job(job: str) -> Job:
    # A path segment, not a query parameter: an unknown job is a resource that does not exist.
    if job in JOB_NAMES:
        return job
    raise NotFound("matching job", job)


_Probability = Annotated[float, msgspec.Meta(gt=0, lt=1)]


class ThresholdsUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An org admin's own thresholds for a job: auto-link at `link` and above, review from
    `review`; `merge` (dedup jobs only: how much a whole group must agree with a report for it
    to join; refused for the entity job, which never merges groups) left out keeps the model's
    own."""

    link: _Probability
    review: _Probability
    merge: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None

    def __post_init__(self) -> None:
        if self.review > self.link:
            raise ValueError("review must not be above link")  # a 422 naming the body


def _audited(setting: ThresholdSetting | None) -> dict[str, float | None] | None:
    if setting is None:
        return None
    return {"link": setting.link, "review": setting.review, "merge": setting.merge}


@get(
    "/v1/matching/{job:str}/thresholds",
    guards=[requires(*_CASE_TEAM)],
    tags=["matching"],
    summary="The thresholds matching uses for this job: your pinned ones, fitted or default",
)
async def get_thresholds(principal: Caller, db: Db, job: FromPath[str]) -> ThresholdsInForce:
    return await thresholds_in_force(db, principal.org_id, _job(job))


@put(
    "/v1/matching/{job:str}/thresholds",
    guards=[requires(Role.ORG_ADMIN)],
    tags=["matching"],
    summary="Pin your own auto-link and review thresholds for this job (refits keep them)",
)
async def put_thresholds(
    principal: Caller, db: Db, job: FromPath[str], data: JSONBody[ThresholdsUpdate]
) -> ThresholdsInForce:
    kind = _job(job)
    pin = PinnedThresholds(link=data.link, review=data.review, merge=data.merge)
    try:
        async with db.transaction():
            previous, saved = await pin_thresholds(
                db, principal.org_id, kind, pin, principal.user_id
            )
            await audit_staff(
                db, principal, "matching.thresholds_pin", "match_settings", kind,
                old=_audited(previous), new=_audited(saved),
            )  # fmt: skip
    except MergeNotApplicable as exc:
        raise invalid_request(
            f"merge: {exc}",
            errors=[FieldError("merge", str(exc), "body")],
        ) from None
    # The worker reads the pin at its next match (storage.matching.MatchingCache.corpus).
    return await thresholds_in_force(db, principal.org_id, kind)


@delete(
    "/v1/matching/{job:str}/thresholds",
    guards=[requires(Role.ORG_ADMIN)],
    status_code=HTTP_204_NO_CONTENT,
    tags=["matching"],
    summary="Clear your pinned thresholds: the fitted (or default) ones are in force again",
)
async def delete_thresholds(principal: Caller, db: Db, job: FromPath[str]) -> None:
    kind = _job(job)
    async with db.transaction():
        removed = await clear_thresholds(db, principal.org_id, kind)
        if removed is not None:  # clearing no pin changes nothing
            await audit_staff(
                db, principal, "matching.thresholds_clear", "match_settings", kind,
                old=_audited(removed), new=None,
            )  # fmt: skip


ROUTES: list[Any] = [
    refit,
    get_thresholds,
    put_thresholds,
    delete_thresholds,
    list_decisions,
    get_decision,
    accept_decision,
    reject_decision,
    undo,
    get_incident,
    get_person,
    entity_reports,
    clusters,
]
