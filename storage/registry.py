"""Registry repository: entities with licences, org-owned or shared, published to devices.

Each write also refreshes the entity's rows in the change feed: one per region key (its country,
its H3 cell), with an ``out_of_scope`` tombstone for a key it left, so devices of that region drop
it and devices of the new one receive it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import h3
import msgspec

from cases.registry import (
    REGION_RESOLUTION,
    EntityDraft,
    EntityKind,
    ImportProblem,
    Licence,
    ParentRelation,
)
from storage.db import KEYSET_START, Conn
from storage.errors import NotFound, StaleVersion, StorageError
from storage.queries import Q
from sync.changes import EntityChange, RecordKind, Tombstone, TombstoneReason

__all__ = ["Entity", "ImportSummary", "InvalidParent", "RegistryRepository", "region_keys"]

_NIL = uuid.UUID(int=0)
_ENCODER = msgspec.json.Encoder()


class InvalidParent(StorageError):
    """The parent does not exist in a registry the caller may use, or would make a cycle."""


class Entity(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID | None
    kind: EntityKind
    legal_name: str
    aliases: list[str]
    licences: list[Licence]
    registration_number: str | None
    phones: list[str]
    country: str | None
    address: str | None
    latitude: float | None
    longitude: float | None
    region_cell: str | None
    parent_id: uuid.UUID | None
    parent_relation: ParentRelation | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def shared(self) -> bool:
        return self.org_id is None


class ImportSummary(msgspec.Struct, frozen=True):
    created: int
    updated: int
    unchanged: int
    problems: list[ImportProblem]


def _cell(draft: EntityDraft) -> str | None:
    if draft.latitude is None or draft.longitude is None:
        return None
    return str(h3.latlng_to_cell(draft.latitude, draft.longitude, REGION_RESOLUTION))


def region_keys(country: str | None, cell: str | None) -> list[str]:
    """The feed audiences an entity belongs to (see storage.feed.audiences_for)."""
    return [f"region:{k}" for k in (country, cell) if k]


class RegistryRepository:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def get(self, org_id: uuid.UUID, entity_id: uuid.UUID) -> Entity:
        row = await self._conn.fetchrow(Q.get_entity, org_id, entity_id)
        if row is None:
            raise NotFound("entity", entity_id)
        data = dict(row)
        data["licences"] = msgspec.json.decode(data["licences"])
        entity: Entity = msgspec.convert(data, Entity, strict=False)
        return entity

    async def list(
        self,
        org_id: uuid.UUID,
        *,
        include_shared: bool,
        kind: EntityKind | None,
        after: tuple[dt.datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Entity]:
        created, last = after or KEYSET_START
        rows = await self._conn.fetch(
            Q.list_entities, org_id, include_shared, kind, created, last, limit
        )
        return [await self.get(org_id, r["id"]) for r in rows]

    async def _check_parent(
        self, org_id: uuid.UUID | None, draft: EntityDraft, entity_id: uuid.UUID | None
    ) -> None:
        if draft.parent_id is None:
            return
        if draft.parent_id == entity_id:
            raise InvalidParent("an entity cannot be its own parent")
        if not await self._conn.fetchval(Q.parent_exists, org_id, draft.parent_id):
            raise InvalidParent("the parent entity does not exist")
        # Walk up from the parent: meeting this entity again would close a cycle.
        seen: set[uuid.UUID] = set()
        current: uuid.UUID | None = draft.parent_id
        while current is not None and current not in seen:
            if current == entity_id:
                raise InvalidParent("the parent link would make a cycle")
            seen.add(current)
            current = await self._conn.fetchval(Q.entity_parent, current)

    async def add(self, org_id: uuid.UUID | None, draft: EntityDraft) -> Entity:
        draft = draft.normalised()
        async with self._conn.transaction():
            await self._check_parent(org_id, draft, None)
            entity_id = await self._conn.fetchval(
                Q.insert_entity,
                org_id,
                draft.kind.value,
                draft.legal_name,
                list(draft.aliases),
                draft.registration_number,
                list(draft.phones),
                draft.country,
                draft.address,
                draft.latitude,
                draft.longitude,
                _cell(draft),
                draft.parent_id,
                draft.parent_relation.value if draft.parent_relation else None,
            )
            await self._set_licences(entity_id, org_id, draft.licences)
            entity = await self._read(org_id, entity_id)
            await self._publish(entity)
        return entity

    async def update(
        self, org_id: uuid.UUID | None, entity_id: uuid.UUID, draft: EntityDraft, version: int
    ) -> Entity:
        draft = draft.normalised()
        async with self._conn.transaction():
            await self._check_parent(org_id, draft, entity_id)
            new_version = await self._conn.fetchval(
                Q.update_entity,
                org_id,
                entity_id,
                draft.kind.value,
                draft.legal_name,
                list(draft.aliases),
                draft.registration_number,
                list(draft.phones),
                draft.country,
                draft.address,
                draft.latitude,
                draft.longitude,
                _cell(draft),
                draft.parent_id,
                draft.parent_relation.value if draft.parent_relation else None,
                version,
            )
            if new_version is None:
                row = await self._conn.fetchrow(Q.entity_version, entity_id)
                if row is None or row["org_id"] != org_id:
                    raise NotFound("entity", entity_id)
                raise StaleVersion("entity", entity_id, row["version"])
            await self._set_licences(entity_id, org_id, draft.licences)
            entity = await self._read(org_id, entity_id)
            await self._publish(entity)
        return entity

    async def delete(self, org_id: uuid.UUID, entity_id: uuid.UUID) -> None:
        async with self._conn.transaction():
            row = await self._conn.fetchrow(Q.soft_delete_entity, org_id, entity_id)
            if row is None:
                raise NotFound("entity", entity_id)
            await self._retract(org_id, entity_id, row["version"], set(), TombstoneReason.DELETED)

    async def import_licences(
        self, org_id: uuid.UUID | None, rows: Iterable[EntityDraft | ImportProblem]
    ) -> ImportSummary:
        """Upsert a licensing authority's list, keyed on (authority, licence number)."""
        created = updated = unchanged = 0
        problems: list[ImportProblem] = []
        for row in rows:
            if isinstance(row, ImportProblem):
                problems.append(row)
                continue
            licence = row.licences[0]
            existing = await self._conn.fetchval(
                Q.entity_by_licence, org_id, licence.issuing_authority, licence.number
            )
            if existing is None:
                await self.add(org_id, row)
                created += 1
                continue
            current = await self._read(org_id, existing)
            if _same(current, row):
                unchanged += 1
                continue
            merged = msgspec.structs.replace(
                row,
                aliases=tuple(dict.fromkeys([*current.aliases, *row.aliases])),
                latitude=current.latitude,
                longitude=current.longitude,
                parent_id=current.parent_id,
                parent_relation=current.parent_relation,
            )
            await self.update(org_id, existing, merged, current.version)
            updated += 1
        return ImportSummary(created, updated, unchanged, problems)

    async def _read(self, org_id: uuid.UUID | None, entity_id: uuid.UUID) -> Entity:
        # A shared entity is read with any org id; the nil id sees only shared rows.
        return await self.get(org_id or _NIL, entity_id)

    async def _set_licences(
        self, entity_id: uuid.UUID, org_id: uuid.UUID | None, licences: Iterable[Licence]
    ) -> None:
        await self._conn.execute(Q.delete_entity_licences, entity_id)
        for lic in licences:
            await self._conn.execute(
                Q.insert_entity_licence,
                entity_id,
                org_id,
                lic.number,
                lic.issuing_authority,
                lic.status.value,
                lic.valid_until,
            )

    async def _publish(self, entity: Entity) -> None:
        keys = region_keys(entity.country, entity.region_cell)
        change = EntityChange(
            version=entity.version,
            changed_at=entity.updated_at,
            entity_id=entity.id,
            entity_kind=entity.kind.value,
            name=entity.legal_name,
            aliases=tuple(entity.aliases),
            licence_number=entity.licences[0].number if entity.licences else None,
            phones=tuple(entity.phones),
            country=entity.country,
        )
        body = _ENCODER.encode(change).decode()
        for audience in keys:
            await self._conn.execute(
                Q.upsert_feed_change,
                entity.org_id,
                audience,
                RecordKind.ENTITY.value,
                str(entity.id),
                entity.version,
                body,
            )
        await self._retract(
            entity.org_id, entity.id, entity.version, set(keys), TombstoneReason.OUT_OF_SCOPE
        )

    async def _retract(
        self,
        org_id: uuid.UUID | None,
        entity_id: uuid.UUID,
        version: int,
        keep: set[str],
        reason: TombstoneReason,
    ) -> None:
        """Tombstones for the audiences that no longer (or never again) see the entity."""
        tombstone = Tombstone(
            version=version,
            changed_at=dt.datetime.now(dt.UTC),
            record_kind=RecordKind.ENTITY,
            record_id=str(entity_id),
            reason=reason,
        )
        body = _ENCODER.encode(tombstone).decode()
        for row in await self._conn.fetch(Q.entity_audiences, org_id, str(entity_id)):
            if row["audience"] in keep:
                continue
            await self._conn.execute(
                Q.upsert_feed_change,
                org_id,
                row["audience"],
                RecordKind.ENTITY.value,
                str(entity_id),
                version,
                body,
            )


def _same(current: Entity, draft: EntityDraft) -> bool:
    def canon(value: Any) -> Any:
        return msgspec.to_builtins(value)

    return (
        current.kind == draft.kind
        and current.legal_name == draft.legal_name
        and set(draft.aliases) <= set(current.aliases)
        and canon(current.licences) == canon(list(draft.licences))
        and current.registration_number == draft.registration_number
        and current.phones == list(draft.phones)
        and current.country == draft.country
        and current.address == draft.address
    )
