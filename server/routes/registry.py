"""The registry API: employers, recruitment agencies and sub-agents of the caller's organisation,
plus read access to the shared registry (public licence lists)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from cases.accounts import Role
from cases.registry import EntityDraft, EntityKind, parse_licence_csv
from server.auth import ANY_STAFF, Caller, requires
from server.pagination import Page, decode_page_token, page_of
from server.problems import ProblemError
from server.resources import Db, resources_of
from storage.registry import Entity, ImportSummary, InvalidParent, RegistryRepository

__all__ = [
    "create_entity",
    "delete_entity",
    "get_entity",
    "import_licence_list",
    "list_entities",
    "update_entity",
]

_EDITORS = (Role.ORG_ADMIN, Role.CASE_MANAGER)
MAX_IMPORT_BYTES = 20 * 1024 * 1024


class EntityUpdate(EntityDraft, frozen=True, kw_only=True):
    """A full replacement, based on the version the editor saw."""

    version: Annotated[int, msgspec.Meta(ge=1)]


def _bad_parent(exc: InvalidParent) -> ProblemError:
    return ProblemError(422, "invalid-parent", "The parent link is not valid", str(exc))


@post(
    "/v1/registry/entities",
    guards=[requires(*_EDITORS)],
    status_code=HTTP_201_CREATED,
    tags=["registry"],
    summary="Add an employer, recruitment agency or sub-agent to your registry",
)
async def create_entity(principal: Caller, db: Db, data: JSONBody[EntityDraft]) -> Entity:
    try:
        return await RegistryRepository(db).add(principal.org_id, data)
    except InvalidParent as exc:
        raise _bad_parent(exc) from None


@get("/v1/registry/entities", guards=[requires(*ANY_STAFF)], tags=["registry"])
async def list_entities(
    principal: Caller,
    db: Db,
    kind: FromQuery[EntityKind | None] = None,
    include_shared: FromQuery[bool] = True,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    page_token: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Page[Entity]:
    after = decode_page_token(page_token, tuple[datetime, uuid.UUID]) if page_token else None
    items = await RegistryRepository(db).list(
        principal.org_id, include_shared=include_shared, kind=kind, after=after, limit=limit + 1
    )
    return page_of(items, limit, lambda x: (x.created_at, x.id))


@get("/v1/registry/entities/{entity_id:uuid}", guards=[requires(*ANY_STAFF)], tags=["registry"])
async def get_entity(principal: Caller, db: Db, entity_id: FromPath[uuid.UUID]) -> Entity:
    return await RegistryRepository(db).get(principal.org_id, entity_id)


@put(
    "/v1/registry/entities/{entity_id:uuid}",
    guards=[requires(*_EDITORS)],
    tags=["registry"],
    summary="Replace an entity; 409 with the current version if someone changed it meanwhile",
)
async def update_entity(
    principal: Caller, db: Db, entity_id: FromPath[uuid.UUID], data: JSONBody[EntityUpdate]
) -> Entity:
    fields = {k: v for k, v in msgspec.structs.asdict(data).items() if k != "version"}
    draft = EntityDraft(**fields)
    try:
        return await RegistryRepository(db).update(principal.org_id, entity_id, draft, data.version)
    except InvalidParent as exc:
        raise _bad_parent(exc) from None


@delete(
    "/v1/registry/entities/{entity_id:uuid}",
    guards=[requires(*_EDITORS)],
    status_code=HTTP_204_NO_CONTENT,
    tags=["registry"],
)
async def delete_entity(principal: Caller, db: Db, entity_id: FromPath[uuid.UUID]) -> None:
    await RegistryRepository(db).delete(principal.org_id, entity_id)


@post(
    "/v1/registry/import",
    guards=[requires(*_EDITORS)],
    status_code=200,
    tags=["registry"],
    summary="Import a licensing authority's list (CSV); idempotent on authority + licence number",
    request_max_body_size=MAX_IMPORT_BYTES,
)
async def import_licence_list(
    principal: Caller, state: State, request: Request[Any, Any, Any]
) -> ImportSummary:
    if not request.headers.get("content-type", "").startswith("text/csv"):
        raise ProblemError(415, "unsupported-media-type", "Send the list as text/csv")
    raw = await request.body()  # before taking a pooled connection: the list may be large
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ProblemError(400, "malformed-body", "The CSV is not UTF-8") from None
    rows = parse_licence_csv(text)
    async with resources_of(state).pool.acquire() as db, db.transaction():
        return await RegistryRepository(db).import_licences(principal.org_id, rows)
