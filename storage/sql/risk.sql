-- Risk runs, schedules, settings, alerts, subscriptions and webhook deliveries.

-- name: insert_risk_run
INSERT INTO risk_runs (org_id, trigger, schedule_key, requested_by, params, raise_alerts)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
RETURNING *;

-- name: get_risk_run
SELECT *
FROM risk_runs WHERE org_id = $1 AND id = $2;

-- name: list_risk_runs
SELECT *
FROM risk_runs
WHERE org_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $4;

-- name: start_risk_run
UPDATE risk_runs SET state = 'running', started_at = now()
WHERE id = $1 AND state = 'queued'
RETURNING true;

-- name: finish_risk_run
UPDATE risk_runs
SET state = $2, finished_at = clock_timestamp(), watermark_received_at = $3,
    watermark_change_no = $4, report_count = $5, results = $6::jsonb, alerts_raised = $7,
    alerts_updated = $8, code_version = $9, error = $10
WHERE id = $1;

-- name: get_risk_settings
SELECT alert_min_recurrence_days FROM risk_org_settings WHERE org_id = $1;

-- name: upsert_risk_settings
INSERT INTO risk_org_settings (org_id, alert_min_recurrence_days) VALUES ($1, $2)
ON CONFLICT (org_id) DO UPDATE
SET alert_min_recurrence_days = EXCLUDED.alert_min_recurrence_days, updated_at = now();

-- name: list_risk_schedules
SELECT * FROM risk_schedules WHERE org_id = $1 ORDER BY name;

-- name: get_risk_schedule
SELECT * FROM risk_schedules WHERE org_id = $1 AND id = $2;

-- name: insert_risk_schedule
INSERT INTO risk_schedules (org_id, name, cron, enabled, params)
VALUES ($1, $2, $3, $4, $5::jsonb)
RETURNING *;

-- name: update_risk_schedule
UPDATE risk_schedules
SET name = $4, cron = $5, enabled = $6, params = $7::jsonb, version = version + 1,
    updated_at = now()
WHERE org_id = $1 AND id = $2 AND version = $3
RETURNING *;

-- name: delete_risk_schedule
DELETE FROM risk_schedules WHERE org_id = $1 AND id = $2 RETURNING id;

-- name: list_scheduled_scans
SELECT s.id::text AS key, s.org_id, s.cron, s.params::text AS params
FROM risk_schedules s WHERE s.enabled
UNION ALL
SELECT 'default:' || o.id::text, o.id, $1::text, '{}'
FROM orgs o
WHERE NOT EXISTS (SELECT 1 FROM risk_schedules s WHERE s.org_id = o.id)
ORDER BY 1;

-- name: risk_scan_reports
-- The reports a scan counts: not withdrawn, in the study period, received by the cut-off.
SELECT r.id, r.monitor_id, r.device_id, r.latitude, r.longitude, r.categories,
       (r.occurred_at AT TIME ZONE 'UTC')::date AS day, r.received_at,
       (r.content -> 'location' ->> 'accuracy_m')::double precision AS accuracy_m,
       r.content ->> 'destination_country' AS country
FROM reports r
WHERE r.org_id = $1 AND r.deleted_at IS NULL
  AND r.occurred_at >= $2 AND r.occurred_at < $3 AND r.received_at < $4
ORDER BY r.id;

-- name: risk_feed_watermark
SELECT coalesce(max(change_no), 0) FROM sync_changes WHERE org_id = $1 OR org_id IS NULL;

-- name: risk_scan_entity_links
SELECT report_id, role, entity_id FROM entity_links
WHERE org_id = $1 AND report_id = ANY($2::uuid[]);

-- name: risk_entity_ancestry
-- The linked entities and all their ancestors (a shared-registry entity has org_id NULL).
WITH RECURSIVE tree AS (
    SELECT id, parent_id FROM entities
    WHERE id = ANY($2::uuid[]) AND (org_id = $1 OR org_id IS NULL)
    UNION
    SELECT e.id, e.parent_id FROM entities e JOIN tree t ON e.id = t.parent_id
    WHERE e.org_id = $1 OR e.org_id IS NULL
)
SELECT t.id, t.parent_id, e.legal_name, e.kind
FROM tree t JOIN entities e ON e.id = t.id
ORDER BY t.id;

-- name: risk_incident_of_reports
SELECT report_id, incident_id FROM incident_members
WHERE org_id = $1 AND report_id = ANY($2::uuid[]);

-- name: lock_org_alerts
SELECT pg_advisory_xact_lock(hashtext('fairwatch.risk.alerts'), hashtext($1::text));

-- name: find_continuing_space_time_alert
SELECT id FROM alerts
WHERE org_id = $1 AND kind = 'space_time' AND scope = $2 AND status <> 'dismissed'
  AND cells && $3::text[] AND window_end >= $4::date - 1 AND window_start <= $5::date
  AND NOT (id = ANY($6::uuid[]))
ORDER BY updated_at DESC LIMIT 1;

-- name: find_continuing_surge_alert
SELECT id FROM alerts
WHERE org_id = $1 AND kind = 'entity_surge' AND scope = $2 AND entity_role = $3
  AND status <> 'dismissed'
  AND (entity_id = ANY($4::uuid[]) OR $5::uuid = ANY(entity_path))
  AND window_end >= $6::date - 1 AND window_start <= $7::date
  AND NOT (id = ANY($8::uuid[]))
ORDER BY updated_at DESC LIMIT 1;

-- name: insert_alert
INSERT INTO alerts (org_id, kind, scope, categories, cells, centre_cell, radius_km, countries,
    entity_role, entity_id, entity_path, entity, window_start, window_end, observed, expected,
    ratio, llr, p_value, replicas, recurrence_interval_days, member_report_ids,
    linked_entities, method, params, seed, code_version, quality, first_run_id, last_run_id,
    scan_p_value, scan_recurrence_interval_days, scans_in_run)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15, $16, $17, $18,
    $19, $20, $21, $22, $23::jsonb, $24, $25::jsonb, $26, $27, $28::jsonb, $29, $29, $30, $31,
    $32)
RETURNING id;

-- name: update_alert_statistics
UPDATE alerts
SET categories = $3, cells = $4, centre_cell = $5, radius_km = $6, countries = $7,
    entity_id = $8, entity_path = $9, entity = $10::jsonb, window_start = $11, window_end = $12,
    observed = $13, expected = $14, ratio = $15, llr = $16, p_value = $17, replicas = $18,
    recurrence_interval_days = $19,
    member_report_ids = ARRAY(SELECT DISTINCT unnest(member_report_ids || $20::uuid[]) ORDER BY 1),
    linked_entities = $21::jsonb, params = $22::jsonb, seed = $23, code_version = $24,
    quality = $25::jsonb, last_run_id = $26, scan_p_value = $27,
    scan_recurrence_interval_days = $28, scans_in_run = $29, version = version + 1,
    updated_at = now()
WHERE org_id = $1 AND id = $2
RETURNING version;

-- name: get_alert
SELECT *
FROM alerts WHERE org_id = $1 AND id = $2;

-- name: get_alert_for_update
SELECT *
FROM alerts WHERE org_id = $1 AND id = $2 FOR UPDATE;

-- name: list_alerts
SELECT *
FROM alerts
WHERE org_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $6;

-- name: set_alert_status
UPDATE alerts
SET status = $3, dismiss_reason = $4, case_id = coalesce($5, case_id), status_changed_by = $6,
    status_changed_at = now(), version = version + 1, updated_at = now()
WHERE org_id = $1 AND id = $2
RETURNING version;

-- name: set_alert_verdict
UPDATE alerts
SET verdict = $3, verdict_note = $4, verdict_by = $5, verdict_at = now(),
    version = version + 1, updated_at = now()
WHERE org_id = $1 AND id = $2
RETURNING version;

-- name: insert_alert_version
INSERT INTO alert_versions (alert_id, org_id, version, event, run_id, actor_id, snapshot)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
RETURNING seq;

-- name: notify_alerts
SELECT pg_notify('fairwatch_alerts', $1::text);

-- name: list_alert_versions
SELECT seq, version, event, run_id, created_at, snapshot::text AS snapshot
FROM alert_versions WHERE org_id = $1 AND alert_id = $2 ORDER BY version;

-- name: alert_events_after
SELECT seq, event, snapshot::text AS snapshot
FROM alert_versions WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3;

-- name: alert_stream_snapshot
-- In the stream read's REPEATABLE READ snapshot: the oldest transaction still running and all
-- those running (their events may yet commit with a lower seq than ones already sent).
SELECT pg_snapshot_xmin(s)::text::bigint AS xmin,
       array(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x ORDER BY 1) AS xip
FROM pg_current_snapshot() AS s;

-- name: alert_events_late_of
-- Events at or below the stream's last seq written by the transactions running at its last read.
SELECT seq, event, snapshot::text AS snapshot
FROM alert_versions WHERE org_id = $1 AND seq <= $2 AND xid = ANY($3::text[]::xid8[])
ORDER BY seq;

-- name: alert_events_late_from
-- After a reconnect: events at or below the last seq from any transaction from the horizon on.
SELECT seq, event, snapshot::text AS snapshot
FROM alert_versions WHERE org_id = $1 AND seq <= $2 AND xid >= $3::text::xid8
ORDER BY seq;

-- name: last_alert_event
SELECT coalesce(max(seq), 0) FROM alert_versions WHERE org_id = $1;

-- name: alert_precision
SELECT kind, count(*) FILTER (WHERE verdict = 'true_alarm') AS true_alarms,
       count(*) FILTER (WHERE verdict = 'false_alarm') AS false_alarms,
       count(*) FILTER (WHERE verdict IS NULL) AS unjudged
FROM alerts WHERE org_id = $1 GROUP BY kind ORDER BY kind;

-- name: insert_subscription
INSERT INTO alert_subscriptions (org_id, user_id, name, cells, countries, categories,
    min_recurrence_days, webhook_url, webhook_secret_sealed, enabled)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING *;

-- name: list_subscriptions_of_user
SELECT * FROM alert_subscriptions WHERE org_id = $1 AND user_id = $2 ORDER BY created_at, id;

-- name: list_enabled_subscriptions
SELECT * FROM alert_subscriptions WHERE org_id = $1 AND enabled ORDER BY created_at, id;

-- name: get_subscription
SELECT * FROM alert_subscriptions WHERE org_id = $1 AND id = $2;

-- name: delete_subscription
DELETE FROM alert_subscriptions WHERE org_id = $1 AND id = $2 AND user_id = $3 RETURNING id;

-- name: insert_webhook_delivery
INSERT INTO webhook_deliveries (org_id, subscription_id, alert_id, alert_version, event)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (subscription_id, alert_id, alert_version) DO NOTHING
RETURNING id;

-- name: get_webhook_delivery_for_update
SELECT d.*, s.webhook_url, s.webhook_secret_sealed, s.enabled, v.snapshot::text AS snapshot
FROM webhook_deliveries d
JOIN alert_subscriptions s ON s.id = d.subscription_id
JOIN alert_versions v ON v.alert_id = d.alert_id AND v.version = d.alert_version
WHERE d.id = $1
FOR UPDATE OF d;

-- name: record_webhook_attempt
UPDATE webhook_deliveries
SET state = $2, attempts = attempts + 1, last_status = $3, last_error = $4,
    next_attempt_at = $5,
    finished_at = CASE WHEN $2 IN ('delivered', 'dead') THEN now() END
WHERE id = $1
RETURNING attempts;

-- name: list_webhook_deliveries
SELECT id, subscription_id, alert_id, alert_version, event, state, attempts, last_status,
       last_error, next_attempt_at, created_at, finished_at
FROM webhook_deliveries
WHERE org_id = $1 AND subscription_id = $2
ORDER BY created_at DESC, id
LIMIT $3;

-- name: risk_count_reports
SELECT count(*) FROM reports
WHERE org_id = $1 AND deleted_at IS NULL AND occurred_at >= $2 AND occurred_at < $3;

-- name: cases_of_reports
SELECT report_id, case_id FROM case_reports WHERE org_id = $1 AND report_id = ANY($2::uuid[]);

-- name: case_in_org
SELECT 1 FROM cases WHERE org_id = $1 AND id = $2;
