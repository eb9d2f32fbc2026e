"""Registry entities for the pull benchmarks, loaded with COPY, and the baselines' bare queries.

The feed rows are what ``storage.registry.RegistryRepository._publish`` writes for a new entity:
one ``EntityChange`` per region key (its country and its H3 cell), in the entity's organisation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
import uuid
from collections.abc import Sequence

import msgspec

from storage.db import Conn
from storage.registry import region_keys
from sync.changes import EntityChange, RecordKind

__all__ = ["bare_feed_select", "copy_rows", "seed_entities"]

_ENCODER = msgspec.json.Encoder()
_WORDS = ["Al Noor", "Gulf Star", "Desert Rose", "Pearl", "Falcon", "Oasis", "Crescent", "Horizon"]
_SUFFIXES = ["Trading W.L.L.", "Contracting Co.", "Manpower Services", "Cleaning W.L.L."]


async def seed_entities(
    conn: Conn, org_id: uuid.UUID, n: int, *, country: str, cell: str, lat: float, lon: float
) -> float:
    """``n`` entities of ``org_id`` in one H3 cell, with licences and feed rows; seconds taken."""
    rng = random.Random(n)
    now = dt.datetime.now(dt.UTC)
    entities: list[tuple[object, ...]] = []
    licences: list[tuple[object, ...]] = []
    feed: list[tuple[object, ...]] = []
    for i in range(n):
        entity_id = uuid.uuid4()
        agency = i % 3 == 0
        kind = "recruitment_agency" if agency else "employer"
        name = f"{rng.choice(_WORDS)} {rng.choice(_SUFFIXES)} {i:06d}"
        phones = [f"+9744{rng.randint(1000000, 9999999)}"]
        licence = f"RA{country}{i:07d}" if agency else None
        entities.append(
            (entity_id, org_id, kind, name, [], phones, country, lat, lon, cell, now, now)
        )
        if licence is not None:
            licences.append((entity_id, org_id, licence, "MOL", "active"))
        change = EntityChange(
            version=1,
            changed_at=now,
            entity_id=entity_id,
            entity_kind=kind,
            name=name,
            licence_number=licence,
            phones=tuple(phones),
            country=country,
        )
        body = _ENCODER.encode(change).decode()
        for audience in region_keys(country, cell):
            feed.append((org_id, audience, RecordKind.ENTITY.value, str(entity_id), 1, body))
    start = time.perf_counter()
    async with conn.transaction():
        await conn.copy_records_to_table(
            "entities",
            records=entities,
            columns=[
                "id", "org_id", "kind", "legal_name", "aliases", "phones", "country",
                "latitude", "longitude", "region_cell", "created_at", "updated_at",
            ],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "entity_licences",
            records=licences,
            columns=["entity_id", "org_id", "number", "issuing_authority", "status"],
        )
        await conn.copy_records_to_table(
            "sync_changes",
            records=feed,
            columns=["org_id", "audience", "record_kind", "record_id", "version", "body"],
        )
    await conn.execute("ANALYZE entities; ANALYZE sync_changes")
    return time.perf_counter() - start


async def copy_rows(
    conns: Sequence[Conn],
    table: str,
    columns: list[str],
    rows: list[tuple[object, ...]],
    batch: int,
) -> float:
    """COPY ``rows`` in batches of ``batch``, spread over the connections at once; seconds."""
    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]

    async def worker(conn: Conn, mine: list[list[tuple[object, ...]]]) -> None:
        for chunk in mine:
            await conn.copy_records_to_table(table, records=chunk, columns=columns)

    start = time.perf_counter()
    await asyncio.gather(*(worker(c, chunks[i :: len(conns)]) for i, c in enumerate(conns)))
    return time.perf_counter() - start


async def bare_feed_select(
    conn: Conn, org_id: uuid.UUID, audiences: list[str], page: int
) -> tuple[float, int]:
    """The same feed rows read with a plain keyset-paged SELECT; (seconds, rows).

    Each audience is read from its own range of ``sync_changes_feed_idx``, with sorts off so the
    planner keeps that plan, as the app reads them (``feed_newer`` in storage/sql/feed.sql). The
    simpler ``audience = ANY(...) ORDER BY change_no`` walked the change_no index past every other
    region's rows: 150 ms for the last page of the small region, a baseline slower than the app.
    """
    after, total = 0, 0
    await conn.execute("SET enable_sort = off")
    try:
        start = time.perf_counter()
        while True:
            rows = await conn.fetch(
                "SELECT change_no, body::text AS body FROM unnest($2::text[]) AS a (audience) "
                "CROSS JOIN LATERAL (SELECT change_no, body FROM sync_changes "
                "WHERE (audience, change_no) > (a.audience, $3) AND audience <= a.audience "
                "AND (org_id = $1 OR org_id IS NULL) ORDER BY audience, change_no LIMIT $4) AS p "
                "ORDER BY change_no LIMIT $4",
                org_id,
                audiences,
                after,
                page,
            )
            total += len(rows)
            if len(rows) < page:
                return time.perf_counter() - start, total
            after = rows[-1]["change_no"]
    finally:
        await conn.execute("RESET enable_sort")
