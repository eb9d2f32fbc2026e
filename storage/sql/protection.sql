-- Protection of workers and reporters (storage/staff_security.py, storage/retention.py).

-- name: upsert_pending_totp
-- A new (unconfirmed) secret replaces an unconfirmed one, never a confirmed one: returns no row
-- when the user already has a second factor in use.
INSERT INTO staff_totp (user_id, org_id, sealed_secret)
VALUES ($1, $2, $3)
ON CONFLICT (user_id) DO UPDATE
SET sealed_secret = excluded.sealed_secret, created_at = now(), confirmed_at = NULL, last_step = 0
WHERE staff_totp.confirmed_at IS NULL
RETURNING user_id;

-- name: lock_totp
SELECT sealed_secret, confirmed_at, last_step
FROM staff_totp WHERE org_id = $1 AND user_id = $2
FOR UPDATE;

-- name: totp_enabled
SELECT confirmed_at IS NOT NULL FROM staff_totp WHERE org_id = $1 AND user_id = $2;

-- name: confirm_totp
UPDATE staff_totp SET confirmed_at = now(), last_step = $3 WHERE org_id = $1 AND user_id = $2;

-- name: use_totp_step
-- Atomic replay protection: a step is accepted once, and never one older than the last.
UPDATE staff_totp SET last_step = $3
WHERE org_id = $1 AND user_id = $2 AND last_step < $3
RETURNING user_id;

-- name: delete_totp
DELETE FROM staff_totp WHERE org_id = $1 AND user_id = $2 RETURNING user_id;

-- name: record_login_failure_backoff
-- Each consecutive failure from the LOCK_AFTER-th on locks the account for twice as long as the
-- previous one (base, 2 base, 4 base ... up to a cap); a success resets the streak.
UPDATE staff_users
SET failed_logins = failed_logins + 1,
    locked_until = CASE
        WHEN failed_logins + 1 >= $2 THEN now() + make_interval(
            secs => least($4::double precision,
                          $3::double precision * power(2, least(failed_logins + 1 - $2, 30))))
        ELSE locked_until END
WHERE id = $1
RETURNING failed_logins, locked_until;

-- name: void_password_resets
UPDATE password_resets SET used_at = now() WHERE user_id = $1 AND used_at IS NULL;

-- name: insert_password_reset
INSERT INTO password_resets (token_hash, org_id, user_id, created_by, expires_at)
VALUES ($1, $2, $3, $4, $5);

-- name: claim_password_reset
UPDATE password_resets SET used_at = now()
WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
RETURNING org_id, user_id;

-- name: set_password_after_reset
UPDATE staff_users
SET password_hash = $3, failed_logins = 0, locked_until = NULL, updated_at = now()
WHERE org_id = $1 AND id = $2 AND is_active
RETURNING id;

-- name: get_retention_settings
SELECT org_id, redact_after_days, legal_hold, version, updated_at
FROM retention_settings WHERE org_id = $1;

-- name: put_retention_settings
INSERT INTO retention_settings (org_id, redact_after_days, legal_hold, updated_by)
VALUES ($1, $2, $3, $4)
ON CONFLICT (org_id) DO UPDATE
SET redact_after_days = excluded.redact_after_days, legal_hold = excluded.legal_hold,
    updated_by = excluded.updated_by, updated_at = now(),
    version = retention_settings.version + 1
RETURNING org_id, redact_after_days, legal_hold, version, updated_at;

-- name: retention_orgs
SELECT org_id, redact_after_days FROM retention_settings
WHERE redact_after_days IS NOT NULL AND NOT legal_hold
ORDER BY org_id;

-- name: lock_retention_settings
-- Taken by the job so a legal hold set meanwhile waits for (or stops) this org's redaction.
SELECT redact_after_days, legal_hold FROM retention_settings WHERE org_id = $1 FOR SHARE;

-- name: reports_due_for_redaction
-- Reports followed in a case closed more than $2 days ago (closing time from the timeline, or
-- the case's last update when the timeline has no closing event). Only the move INTO closed
-- counts: later events on a closed case (a note, an incident attached) repeat its state and must
-- not postpone the redaction.
SELECT r.id, c.id AS case_id
FROM reports r
JOIN case_reports cr ON cr.report_id = r.id AND cr.org_id = r.org_id
JOIN cases c ON c.org_id = cr.org_id AND c.id = cr.case_id
WHERE r.org_id = $1
  AND r.redacted_at IS NULL
  AND c.status = 'closed'
  AND coalesce(
        (SELECT max(e.at) FROM case_events e
         WHERE e.org_id = c.org_id AND e.case_id = c.id AND e.to_state = 'closed'
           AND e.from_state IS DISTINCT FROM 'closed'),
        c.updated_at) < now() - make_interval(days => $2)
ORDER BY r.id
LIMIT $3
FOR UPDATE OF r SKIP LOCKED;

-- name: redact_report
UPDATE reports SET sealed = NULL, redacted_at = now()
WHERE org_id = $1 AND id = $2 AND redacted_at IS NULL
RETURNING id, monitor_id, deleted_at IS NOT NULL AS deleted;

-- name: erase_report_attachments
-- The redacted report's declared attachments are erased for it, and each hash is queued once per
-- organisation for the blob store (storage/attachments.py erase_pending_attachments deletes the
-- bytes after this transaction commits). Returns how many attachments were erased.
WITH erased AS (
    UPDATE report_attachments SET erased_at = now()
    WHERE org_id = $1 AND report_id = $2 AND erased_at IS NULL
    RETURNING sha256
), queued AS (
    INSERT INTO blob_erasures (org_id, sha256)
    SELECT DISTINCT $1::uuid, sha256 FROM erased
    ON CONFLICT (org_id, sha256) DO NOTHING
)
SELECT count(*) FROM erased;

-- name: live_report_attachments
SELECT sha256, size_bytes, media_type, sensitive FROM report_attachments
WHERE report_id = $1 AND erased_at IS NULL ORDER BY sha256;

-- name: pending_blob_erasures
-- Organisations on legal hold keep their queued erasures until the hold is lifted.
SELECT e.org_id, e.sha256 FROM blob_erasures e
WHERE NOT EXISTS (SELECT 1 FROM retention_settings s WHERE s.org_id = e.org_id AND s.legal_hold)
ORDER BY e.requested_at, e.org_id, e.sha256 LIMIT $1;

-- name: lock_blob_erasure
SELECT 1 FROM blob_erasures WHERE org_id = $1 AND sha256 = $2 FOR UPDATE;

-- name: org_declares_blob_live
-- A report of the organisation that is not redacted still declares the hash.
SELECT EXISTS (SELECT 1 FROM report_attachments
               WHERE org_id = $1 AND sha256 = $2 AND erased_at IS NULL);

-- name: drop_org_blob
DELETE FROM blobs WHERE org_id = $1 AND sha256 = $2 RETURNING size_bytes;

-- name: blob_held_by_any_org
-- Every organisation holding the bytes has delivered them itself (a row in blobs); one that
-- declares the hash without a row must upload it anyway, which stores the bytes again.
SELECT EXISTS (SELECT 1 FROM blobs WHERE sha256 = $1);

-- name: drop_blob_erasure
DELETE FROM blob_erasures WHERE org_id = $1 AND sha256 = $2;

-- name: redact_report_versions
UPDATE report_versions SET sealed = NULL WHERE report_id = $1 AND sealed IS NOT NULL;

-- name: redact_report_conflicts
-- Conflicts on sensitive fields keep their values sealed as {"sealed": ...}; those go with the
-- report's identity. Values of other fields (categories, severity...) stay for the record.
UPDATE report_conflicts SET
    base_value = CASE WHEN jsonb_typeof(base_value) = 'object' AND base_value ? 'sealed'
                      THEN NULL ELSE base_value END,
    server_value = CASE WHEN jsonb_typeof(server_value) = 'object' AND server_value ? 'sealed'
                        THEN NULL ELSE server_value END,
    incoming_value = CASE WHEN jsonb_typeof(incoming_value) = 'object' AND incoming_value ? 'sealed'
                          THEN NULL ELSE incoming_value END,
    resolved_value = CASE WHEN jsonb_typeof(resolved_value) = 'object' AND resolved_value ? 'sealed'
                          THEN NULL ELSE resolved_value END
WHERE report_id = $1
  AND 'sealed' IN (
        SELECT jsonb_object_keys(v) FROM unnest(ARRAY[base_value, server_value, incoming_value,
                                                      resolved_value]) AS v
        WHERE jsonb_typeof(v) = 'object');

-- name: redact_case_referrals
-- What was sent to partners is kept (encrypted) for the life of the case; when the case's reports
-- are redacted, the copy goes too. The list of fields sent stays, for the audit.
UPDATE referrals SET sealed_payload = NULL
WHERE org_id = $1 AND case_id = $2 AND sealed_payload IS NOT NULL;

-- name: get_privacy_settings
SELECT org_id, analyst_cell_resolution, version, updated_at
FROM privacy_settings WHERE org_id = $1;

-- name: put_privacy_settings
INSERT INTO privacy_settings (org_id, analyst_cell_resolution, updated_by)
VALUES ($1, $2, $3)
ON CONFLICT (org_id) DO UPDATE
SET analyst_cell_resolution = excluded.analyst_cell_resolution,
    updated_by = excluded.updated_by, updated_at = now(), version = privacy_settings.version + 1
RETURNING org_id, analyst_cell_resolution, version, updated_at;

-- name: data_keys_to_rewrap_by_org
SELECT org_id, count(*) AS n FROM org_data_keys WHERE master_key_id <> $1
GROUP BY org_id ORDER BY org_id;

-- name: list_org_slugs
SELECT id, slug FROM orgs ORDER BY slug;
