"""Every row belongs to an organisation: a structural check of the migrated schema.

A new table must carry a non-null ``org_id`` or be listed below with the reason it does not, so
"which organisation owns this row?" always has an answer the isolation tests can rely on.
"""

from __future__ import annotations

import pytest

from storage.db import Conn

pytestmark = pytest.mark.db

# Tables with no organisation by design: they hold no one's data.
SYSTEM = {
    "orgs": "the organisations themselves",
    "schema_migrations": "which migrations ran",
    "sync_feed_state": "one row: the feed's epoch and pruning watermark",
}
# org_id may be NULL, meaning shared by every organisation (public licence lists, the taxonomy's
# feed rows) or the deployment itself (scheduled maintenance jobs).
SHARED_WHEN_NULL = {"entities", "entity_licences", "jobs", "sync_changes"}
# Rows owned through a parent that has a non-null org_id.
THROUGH_PARENT = {"report_versions": "reports", "sync_held": "devices"}

_TABLES = """
SELECT t.table_name AS name, c.is_nullable AS nullable
FROM information_schema.tables t
LEFT JOIN information_schema.columns c
  ON c.table_schema = t.table_schema AND c.table_name = t.table_name AND c.column_name = 'org_id'
WHERE t.table_schema = 'public' AND t.table_type = 'BASE TABLE'
"""
_FOREIGN_KEYS = """
SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent,
       (SELECT array_agg(a.attname::text) FROM pg_attribute a
        WHERE a.attrelid = conrelid AND a.attnum = ANY(conkey)) AS columns
FROM pg_constraint WHERE contype = 'f'
"""


async def test_every_table_says_which_organisation_owns_its_rows(db: Conn) -> None:
    tables = {r["name"]: r["nullable"] for r in await db.fetch(_TABLES)}
    keys = {(r["child"], r["parent"], tuple(r["columns"])) for r in await db.fetch(_FOREIGN_KEYS)}
    owned = {name for name, nullable in tables.items() if nullable == "NO"}
    unexplained = set(tables) - owned - set(SYSTEM) - SHARED_WHEN_NULL - set(THROUGH_PARENT)
    assert not unexplained, f"tables without a non-null org_id: {sorted(unexplained)}"
    # The exceptions are still what they claim to be (a stale entry would hide a real gap).
    assert set(SYSTEM) <= set(tables) and not (set(SYSTEM) & owned)
    for name in SHARED_WHEN_NULL:
        assert tables[name] == "YES", name
        assert (name, "orgs", ("org_id",)) in keys, f"{name}.org_id must reference orgs"
    for child, parent in THROUGH_PARENT.items():
        assert tables[child] is None, f"{child} has an org_id now: move it to the owned tables"
        assert parent in owned, parent
        assert any(k[0] == child and k[1] == parent for k in keys), f"{child} -> {parent}"
