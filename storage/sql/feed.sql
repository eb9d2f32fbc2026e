-- The change feed devices pull from (storage/feed.py).

-- name: upsert_feed_change
-- Rewriting a record moves it to the end of the feed under the writing transaction's id. The body
-- is stored as sent (json, not jsonb): pages serve it as it is.
INSERT INTO sync_changes (org_id, audience, record_kind, record_id, version, body)
VALUES ($1, $2, $3, $4, $5, $6::json)
ON CONFLICT (coalesce(org_id, '00000000-0000-0000-0000-000000000000'::uuid),
             audience, record_kind, record_id)
DO UPDATE SET change_no = nextval(pg_get_serial_sequence('sync_changes', 'change_no')),
              xid = pg_current_xact_id(), version = excluded.version, body = excluded.body,
              changed_at = now();

-- name: feed_snapshot
-- The feed's state and the transaction horizon, read in the page's REPEATABLE READ snapshot. It
-- also sets the planner up for the page queries, for this transaction only (set_config with
-- is_local = true is SET LOCAL; the table has one row): feed_newer needs sorts disabled, and a
-- generic cached plan of feed_band could read the delivered range instead of the xid index.
SELECT epoch, pruned_change, pruned_xid,
       pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS snapshot_xmin,
       set_config('enable_sort', 'off', true) AS enable_sort,
       set_config('plan_cache_mode', 'force_custom_plan', true) AS plan_cache_mode
FROM sync_feed_state;

-- name: allow_sort
SET LOCAL enable_sort = on;

-- name: feed_band
-- The band of late commits below the cursor (sync/cursor.py PullWindow), through the xid index
-- (after allow_sort): transactions still running at the previous page are few.
SELECT change_no, xid::text::bigint AS xid, body::text AS body
FROM sync_changes
WHERE audience = ANY($2::text[]) AND (org_id = $1 OR org_id IS NULL)
  AND xid >= $5::text::xid8 AND xid < $3::text::xid8 AND change_no > $6 AND change_no <= $4
ORDER BY change_no
LIMIT $7;

-- name: feed_newer
-- Rows newer than the cursor (sync/cursor.py PullWindow), each audience read as one short range of
-- sync_changes_feed_idx (audience, change_no), then merged. The range is written as a row
-- comparison and ordered by (audience, change_no), and it runs with sorts disabled
-- (feed_snapshot), so that this index is the only plan: with `audience = x ... ORDER BY
-- change_no` the planner, guessing rows per audience from the number of distinct audiences,
-- would walk the change_no index and filter, reading every other audience's later rows (150 ms a
-- page for a small region ahead of a big one); with sorts allowed it would sort a whole audience.
SELECT change_no, xid::text::bigint AS xid, body::text AS body
FROM (
    SELECT newer.change_no, newer.xid, newer.body
    FROM unnest($2::text[]) AS a (audience)
    CROSS JOIN LATERAL (
        SELECT change_no, xid, body FROM sync_changes
        WHERE (audience, change_no) > (a.audience, $4) AND audience <= a.audience
          AND (org_id = $1 OR org_id IS NULL) AND xid < $3::text::xid8
        ORDER BY audience, change_no
        LIMIT $5) AS newer
    ORDER BY newer.change_no
    LIMIT $5
) AS page;

-- name: note_device_pull
-- When the device last pulled: observability only, no sync guarantee rests on it (the device holds
-- its cursor). So this one statement's transaction commits asynchronously (set_config(..., true)
-- is local to it) instead of waiting for a WAL flush on every page; a crash can lose the last
-- fraction of a second of these timestamps and nothing else.
WITH asynchronous AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE devices SET last_pull_at = now() FROM asynchronous WHERE id = $1;
