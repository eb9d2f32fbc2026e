-- name: get_match_setting
SELECT link, review, merge, updated_by, updated_at
FROM match_settings WHERE org_id = $1 AND job = $2;

-- name: lock_match_setting_key
-- Serialises changes of one org's pin for one job, the first one too (no row to lock yet), so
-- each change's audit entry names the pin it really replaced.
SELECT pg_advisory_xact_lock(hashtext('fairwatch.match_settings'), hashtext($1::uuid::text || ':' || $2::text));

-- name: lock_match_setting
-- The pin a change replaces (for its audit entry), held until the change commits.
SELECT link, review, merge, updated_by, updated_at
FROM match_settings WHERE org_id = $1 AND job = $2
FOR UPDATE;

-- name: put_match_setting
INSERT INTO match_settings (org_id, job, link, review, merge, updated_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (org_id, job) DO UPDATE
SET link = EXCLUDED.link, review = EXCLUDED.review, merge = EXCLUDED.merge,
    updated_by = EXCLUDED.updated_by, updated_at = now()
RETURNING link, review, merge, updated_by, updated_at;

-- name: delete_match_setting
DELETE FROM match_settings WHERE org_id = $1 AND job = $2
RETURNING link, review, merge, updated_by, updated_at;
