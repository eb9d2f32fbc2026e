"""The pull page query reads each audience from its own short index range, whatever the planner
would guess.

A small region ahead of a big one in the feed once cost 150 ms a page: the planner walked the
change_no index and filtered out the big region's rows (it guesses rows per audience from the
number of distinct audiences). ``feed_newer`` is written so that ``sync_changes_feed_idx`` is the
only plan; this checks it, and its rows, on a feed shaped like that.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from storage.db import Conn
from storage.queries import Q

pytestmark = pytest.mark.db

LIMIT = 100
# Audiences of this test only (the session database holds other tests' committed rows).
_RUN = uuid.uuid4().hex[:8]
SMALL, BIG, MONITOR = f"region:small-{_RUN}", f"region:big-{_RUN}", f"monitor:{uuid.uuid4()}"
AUDIENCES = [MONITOR, SMALL, f"region:empty-{_RUN}"]


async def _feed(db: Conn, org_id: uuid.UUID) -> None:
    # The small region first, then a big one it does not see, then two rows for the monitor.
    shape = [(SMALL, 1_000), (BIG, 20_000), (MONITOR, 2)]
    rows = [
        (org_id, audience, "entity", f"{audience}-{i}", 1, json.dumps({"n": i}))
        for audience, count in shape
        for i in range(count)
    ]
    await db.copy_records_to_table(
        "sync_changes",
        records=rows,
        columns=["org_id", "audience", "record_kind", "record_id", "version", "body"],
    )
    await db.execute("ANALYZE sync_changes")


def _scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == "sync_changes" else []
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


@pytest.mark.parametrize("position", ["start", "end_of_small", "past_everything"])
async def test_newer_rows_come_from_the_audience_index_only(db: Conn, position: str) -> None:
    org_id = await db.fetchval(
        "INSERT INTO orgs (slug, name) VALUES ('feed-plan', 'F') RETURNING id"
    )
    await _feed(db, org_id)
    own_xid = int(await db.fetchval("SELECT pg_current_xact_id()::text"))
    mine = await db.fetch(
        "SELECT change_no FROM sync_changes WHERE org_id = $1 AND audience = ANY($2::text[]) "
        "ORDER BY change_no",
        org_id,
        AUDIENCES,
    )
    after = {"start": 0, "end_of_small": mine[-10]["change_no"], "past_everything": 10**12}
    args = (org_id, AUDIENCES, str(own_xid + 1), after[position], LIMIT + 1)
    await db.fetchrow(Q.feed_snapshot)  # sets the planner up, as in a pull

    explained = await db.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + Q.feed_newer, *args)
    scans = _scans(json.loads(explained)[0]["Plan"])
    assert {s.get("Index Name") for s in scans} == {"sync_changes_feed_idx"}
    # Bounded by the page, not by the feed: the big region's 20,000 rows are never read.
    read = sum(
        s["Actual Rows"] * s["Actual Loops"] + s.get("Rows Removed by Filter", 0) for s in scans
    )
    assert read <= (LIMIT + 1) * len(AUDIENCES)

    rows = await db.fetch(Q.feed_newer, *args)
    expected = [r["change_no"] for r in mine if r["change_no"] > after[position]][: LIMIT + 1]
    assert [r["change_no"] for r in rows] == expected
    assert all(r["xid"] == own_xid for r in rows)
