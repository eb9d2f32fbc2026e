-- name: insert_monitor
INSERT INTO monitors (org_id, display_name, region_cells, region_countries)
VALUES ($1, $2, $3, $4)
RETURNING id, org_id, display_name, region_cells, region_countries, is_active, version, created_at;

-- name: get_monitor
SELECT id, org_id, display_name, region_cells, region_countries, is_active, version, created_at
FROM monitors WHERE org_id = $1 AND id = $2;

-- name: list_monitors
SELECT id, org_id, display_name, region_cells, region_countries, is_active, version, created_at
FROM monitors WHERE org_id = $1 AND (created_at, id) > ($2, $3)
ORDER BY created_at, id LIMIT $4;

-- name: insert_enrollment_code
INSERT INTO enrollment_codes (code_hash, org_id, monitor_id, created_by, expires_at)
VALUES ($1, $2, $3, $4, $5);

-- name: redeem_enrollment_code
-- Single use: the UPDATE only matches an unused, unexpired code, so two racing devices get one win.
UPDATE enrollment_codes SET used_at = now(), device_id = $2
WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now()
RETURNING org_id, monitor_id;

-- name: insert_device
INSERT INTO devices (id, org_id, monitor_id, credential_hash, device_model, os_version, app_version)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING enrolled_at;

-- name: resolve_device
SELECT d.id, d.org_id, d.monitor_id, d.enrolled_at, d.revoked_at, d.revoked_reason,
       m.region_cells, m.region_countries, m.is_active AS monitor_active
FROM devices d JOIN monitors m ON m.org_id = d.org_id AND m.id = d.monitor_id
WHERE d.credential_hash = $1;

-- name: revoke_device
UPDATE devices SET revoked_at = coalesce(revoked_at, now()), revoked_reason = $3
WHERE org_id = $1 AND id = $2
RETURNING revoked_at;

-- name: list_devices
SELECT id, monitor_id, enrolled_at, revoked_at, revoked_reason, device_model, os_version,
       app_version, next_seq, clock_offset_seconds, last_push_at, last_pull_at, last_error,
       last_error_at, outbox_depth,
       (SELECT count(*) FROM sync_held h WHERE h.device_id = d.id) AS held_mutations
FROM devices d
WHERE org_id = $1 AND ($2::uuid IS NULL OR monitor_id = $2)
ORDER BY enrolled_at, id;

-- name: lock_device_ledger
SELECT next_seq, clock_samples FROM devices WHERE id = $1 FOR UPDATE;

-- name: update_device_after_push
UPDATE devices
SET next_seq = $2, clock_samples = $3, clock_offset_seconds = $4, last_push_at = now(),
    outbox_depth = $5
WHERE id = $1;

-- name: record_device_error
UPDATE devices SET last_error = $2, last_error_at = now() WHERE id = $1;

-- name: stored_mutations
SELECT mutation_id, device_id, seq, body_hash, result::text AS result
FROM sync_mutations WHERE mutation_id = ANY($1::uuid[]);

-- name: held_mutations
SELECT mutation_id, seq, body_hash, body, body_format, received_at
FROM sync_held WHERE device_id = $1;

-- name: insert_held_mutation
INSERT INTO sync_held (device_id, mutation_id, seq, body_hash, body, body_format, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7);

-- name: delete_held_mutation
DELETE FROM sync_held WHERE device_id = $1 AND mutation_id = $2;

-- name: lock_report
-- FOR NO KEY UPDATE, the lock an UPDATE of the row takes anyway: writers of reports never change
-- the id, and foreign-key checks of rows pointing at the report (case links, matching) take FOR KEY
-- SHARE, which this lets through, so they never wait for a push or a conflict resolution.
SELECT id, org_id, monitor_id, version, content::text AS content, sealed, deleted_at, redacted_at
FROM reports WHERE id = $1 FOR NO KEY UPDATE;

-- name: report_version
SELECT content::text AS content, sealed FROM report_versions WHERE report_id = $1 AND version = $2;

-- name: insert_report
INSERT INTO reports (id, org_id, monitor_id, device_id, version, content, sealed, occurred_at,
                     latitude, longitude, categories, recorded_at, received_at,
                     clock_offset_seconds, time_flags)
VALUES ($1, $2, $3, $4, 1, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14);

-- name: update_report
-- $10: the incident-time flags judged again when the amendment changed the incident time, in
-- place of those named in $9 (the rest judge the first recording and stay); NULL keeps them.
UPDATE reports
SET version = $2, content = $3::jsonb, sealed = $4, occurred_at = $5, latitude = $6,
    longitude = $7, categories = $8, updated_at = now(),
    time_flags = CASE WHEN $10::text[] IS NULL THEN time_flags ELSE ARRAY(
        SELECT f FROM unnest(time_flags) AS f WHERE f <> ALL ($9::text[])
        UNION SELECT unnest($10::text[]) ORDER BY 1) END
WHERE id = $1;

-- name: archive_report_version
-- An amendment is about to replace the current version (which lives in `reports` only): keep it,
-- so that a later amendment based on it can still be merged three-way. Reports stored before
-- migration 0009 already have a row for their current version.
INSERT INTO report_versions (report_id, version, content, sealed)
SELECT id, version, content, sealed FROM reports WHERE id = $1
ON CONFLICT (report_id, version) DO NOTHING;

-- name: delete_report
UPDATE reports SET deleted_at = now(), version = version + 1, status = 'withdrawn',
    updated_at = now()
WHERE id = $1
RETURNING version;

-- name: insert_conflict
INSERT INTO report_conflicts (org_id, report_id, field, base_value, server_value, incoming_value,
                              mutation_id, device_id)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb, $7, $8);

-- name: open_conflict_fields
SELECT DISTINCT field FROM report_conflicts WHERE report_id = $1 AND resolved_at IS NULL
ORDER BY field;

-- name: list_conflicts
SELECT c.id, c.report_id, c.field, c.base_value::text AS base_value,
       c.server_value::text AS server_value, c.incoming_value::text AS incoming_value,
       c.mutation_id, c.device_id, c.created_at, c.resolved_at, c.resolved_by, c.resolution,
       c.resolved_value::text AS resolved_value
FROM report_conflicts c
WHERE c.org_id = $1 AND ($2 OR c.resolved_at IS NULL) AND (c.created_at, c.id) > ($3, $4)
ORDER BY c.created_at, c.id LIMIT $5;

-- name: lock_conflict
SELECT id, report_id, field, incoming_value::text AS incoming_value, resolved_at
FROM report_conflicts WHERE org_id = $1 AND id = $2 FOR UPDATE;

-- name: resolve_conflict
UPDATE report_conflicts
SET resolved_at = now(), resolved_by = $3, resolution = $4, resolved_value = $5::jsonb
WHERE org_id = $1 AND id = $2;

-- name: replace_report_attachments
-- Both halves of one statement see the same snapshot, so the DELETE must spare the rows the
-- INSERT keeps (an ON CONFLICT against a row being deleted would silently drop it).
WITH gone AS (
    DELETE FROM report_attachments WHERE report_id = $1 AND sha256 <> ALL($3::text[])
)
INSERT INTO report_attachments (report_id, org_id, sha256, size_bytes, media_type, sensitive)
SELECT $1, $2, a.sha256, a.size_bytes, a.media_type, a.sensitive
FROM unnest($3::text[], $4::bigint[], $5::text[], $6::boolean[])
     AS a (sha256, size_bytes, media_type, sensitive)
ON CONFLICT (report_id, sha256) DO UPDATE
SET size_bytes = excluded.size_bytes, media_type = excluded.media_type,
    sensitive = excluded.sensitive;

-- name: arrived_blobs
SELECT sha256 FROM blobs WHERE org_id = $1 AND sha256 = ANY($2::text[]);

-- name: settled_attachments
-- Which of a report's declared hashes are not awaited: arrived, or erased by retention.
SELECT sha256 FROM blobs WHERE org_id = $1 AND sha256 = ANY($2::text[])
UNION
SELECT sha256 FROM report_attachments WHERE report_id = $3 AND erased_at IS NOT NULL;

-- name: share_blob_buckets
-- The buckets (as lock_blob_hash computes them) of every hash a push declares, shared: a push
-- only reads whether the bytes exist, so pushes never wait for each other here, but each waits
-- for (and holds off) an upload finishing or an erasure of any of its hashes. Distinct buckets in
-- ascending order, before any report lock; at most 1,024 lock table entries, however many hashes
-- (docs/decisions/0105-blob-store.md, "Erasure"; docs/decisions/0112-push-lock-order.md).
SELECT pg_advisory_xact_lock_shared(hashtext('fairwatch.blob'), k)
FROM (SELECT DISTINCT hashtext(h) & 1023 AS k FROM unnest($1::text[]) AS h ORDER BY k OFFSET 0)
     AS keys;

-- name: lock_feed_state
SELECT epoch, pruned_change, pruned_xid, taxonomy_hash FROM sync_feed_state FOR UPDATE;

-- name: set_taxonomy_hash
UPDATE sync_feed_state SET taxonomy_hash = $1;

-- name: get_report
SELECT id, org_id, monitor_id, device_id, version, content::text AS content, sealed,
       recorded_at, received_at, clock_offset_seconds, time_flags, status, deleted_at
FROM reports WHERE org_id = $1 AND id = $2;

-- name: list_reports
SELECT id, monitor_id, version, occurred_at, categories, received_at, time_flags, status,
       deleted_at IS NOT NULL AS deleted
FROM reports
WHERE org_id = $1 AND ($2::uuid IS NULL OR monitor_id = $2)
  AND (received_at, id) > ($3, $4)
ORDER BY received_at, id LIMIT $5;

-- name: report_attachment_list
-- An erased attachment (its report was redacted) is neither arrived nor awaited.
SELECT ra.sha256, ra.size_bytes, ra.media_type, ra.sensitive,
       b.sha256 IS NOT NULL AND ra.erased_at IS NULL AS arrived,
       ra.erased_at IS NOT NULL AS erased
FROM report_attachments ra
LEFT JOIN blobs b ON b.org_id = ra.org_id AND b.sha256 = ra.sha256
WHERE ra.org_id = $1 AND ra.report_id = $2 ORDER BY ra.sha256;

-- name: insert_blob
INSERT INTO blobs (org_id, sha256, size_bytes) VALUES ($1, $2, $3)
ON CONFLICT (org_id, sha256) DO NOTHING;

-- name: blob_exists
SELECT size_bytes FROM blobs WHERE org_id = $1 AND sha256 = $2;

-- name: lock_upload
SELECT upload_id, size_bytes, part_size, media_type FROM blob_uploads
WHERE org_id = $1 AND sha256 = $2 FOR UPDATE;

-- name: get_upload
SELECT upload_id, size_bytes, part_size, media_type FROM blob_uploads
WHERE org_id = $1 AND sha256 = $2;

-- name: insert_upload
INSERT INTO blob_uploads (org_id, sha256, upload_id, size_bytes, part_size, media_type, device_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (org_id, sha256) DO NOTHING
RETURNING 1;

-- name: delete_upload
DELETE FROM blob_uploads WHERE org_id = $1 AND sha256 = $2;

-- name: delete_upload_of
-- Forget the upload the store no longer has, not one of the same hash started since.
DELETE FROM blob_uploads WHERE org_id = $1 AND sha256 = $2 AND upload_id = $3;

-- name: take_upload
-- The erasure holds the hash bucket and must not wait for an upload row: a finish holds that
-- row while the store verifies, before it takes the bucket (decision 0112, the lock order). A
-- locked row is such a finish, which re-checks under the bucket once this erasure has committed
-- and discards an erased upload itself.
DELETE FROM blob_uploads WHERE (org_id, sha256) IN (
    SELECT org_id, sha256 FROM blob_uploads WHERE org_id = $1 AND sha256 = $2
    FOR UPDATE SKIP LOCKED)
RETURNING upload_id;

-- name: lock_blob_hash
-- Serialises what decides whether a blob's bytes exist: an upload finishing the blob and
-- retention erasing it take this exclusively, a push declaring it shares it (share_blob_buckets);
-- see docs/decisions/0105-blob-store.md, "Erasure". The key is one of 1,024 buckets of the hash,
-- in a two-key space of its own: hashes sharing a bucket only wait for each other. Finishing and
-- erasing take one bucket each (erasing first in its transaction, finishing after its upload row
-- and the store's verification, so pushes do not wait for the hashing); only a push takes several.
SELECT pg_advisory_xact_lock(hashtext('fairwatch.blob'), hashtext($1) & 1023);

-- name: blob_erased_for_org
-- True when the organisation declared this hash on redacted reports only: the attachment was
-- erased, nothing live awaits it, and an upload would bring the erased evidence back. NULL (no
-- declaration at all: a device may upload before it pushes the report) lets the upload go on.
SELECT bool_and(erased_at IS NOT NULL) FROM report_attachments WHERE org_id = $1 AND sha256 = $2;

-- name: reports_declaring_blob
-- In id order: the caller bumps each one's status (a row lock) in turn, and every writer that
-- locks several reports takes them in id order (docs/decisions/0112-push-lock-order.md).
SELECT r.id, r.monitor_id, r.version, r.content::text AS content
FROM reports r
WHERE r.org_id = $1 AND r.deleted_at IS NULL
  AND r.id IN (SELECT report_id FROM report_attachments WHERE org_id = $1 AND sha256 = $2)
ORDER BY r.id;

-- name: bump_status_version
UPDATE reports SET status_version = status_version + 1 WHERE id = $1
RETURNING status_version, version;

-- name: lock_reports
-- The existing reports among $1, locked in id order (the mode of lock_report). A push takes them
-- all at once, after its blob buckets and before any run; its create run locks its ids again
-- (locks the transaction already holds, unless another device created one of them meanwhile).
SELECT id FROM reports WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE;

-- name: lock_reports_for_edit
-- The reports a push's run of amendments and withdrawals touches (storage/push_edits.py), as
-- lock_report reads them. Locked in id order, in the mode the push locked them up front with
-- lock_reports, so under execute_push this never waits for a report that existed up front.
SELECT id, org_id, monitor_id, version, content::text AS content, sealed, deleted_at, redacted_at
FROM reports WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE;

-- name: report_versions_wanted
-- Stored versions by (report, version) pair, for the bases of a run of amendments.
SELECT v.report_id, v.version, v.content::text AS content, v.sealed
FROM report_versions v
JOIN unnest($1::uuid[], $2::integer[]) AS w (report_id, version)
  ON v.report_id = w.report_id AND v.version = w.version;

-- name: archive_report_versions
-- archive_report_version for several reports at once, before their rows are replaced.
INSERT INTO report_versions (report_id, version, content, sealed)
SELECT id, version, content, sealed FROM reports WHERE id = ANY($1::uuid[])
ON CONFLICT (report_id, version) DO NOTHING;

-- name: insert_report_version
-- A version that an amendment wrote and a later amendment of the same push replaced: it never
-- reached the report row, so it is archived from the values themselves.
INSERT INTO report_versions (report_id, version, content, sealed)
VALUES ($1, $2, $3::jsonb, $4)
ON CONFLICT (report_id, version) DO NOTHING;

-- name: bump_status_versions
-- bump_status_version by n for several reports (n: how many times the one-by-one path would have
-- bumped it).
UPDATE reports r SET status_version = r.status_version + b.n
FROM unnest($1::uuid[], $2::integer[]) AS b (id, n)
WHERE r.id = b.id
RETURNING r.id, r.status_version, r.version;

-- name: settled_attachments_of_reports
-- settled_attachments for several reports: the org's arrived blobs among the declared hashes
-- (report_id null), and each report's erased attachments.
SELECT NULL::uuid AS report_id, sha256 FROM blobs WHERE org_id = $1 AND sha256 = ANY($2::text[])
UNION ALL
SELECT report_id, sha256 FROM report_attachments
WHERE report_id = ANY($3::uuid[]) AND erased_at IS NOT NULL;

-- name: open_conflict_fields_of_reports
SELECT DISTINCT report_id, field FROM report_conflicts
WHERE report_id = ANY($1::uuid[]) AND resolved_at IS NULL
ORDER BY report_id, field;

-- name: report_attachment_for_download
-- One attachment a report declares, for the case team's download: whether this organisation's
-- copy has arrived, and whether retention erased it (with its report, or by redacting the report).
-- The report's organisation is part of the key, so another organisation's report is no row at all.
SELECT ra.media_type, ra.sensitive,
       b.sha256 IS NOT NULL AS arrived,
       ra.erased_at IS NOT NULL OR r.redacted_at IS NOT NULL AS erased
FROM report_attachments ra
JOIN reports r ON r.org_id = ra.org_id AND r.id = ra.report_id
LEFT JOIN blobs b ON b.org_id = ra.org_id AND b.sha256 = ra.sha256
WHERE ra.org_id = $1 AND ra.report_id = $2 AND ra.sha256 = $3;
