-- Cases: the row, its version-checked writes, the timeline, notes and SLA settings.

-- name: case_get
SELECT id, number, org_id, incident_id, merged_into, title, status, priority,
       priority_reasons::text AS priority_reasons, priority_manual, assignee_id, sla_started_at,
       due_at, outcome, closure_reason, version, created_by, created_at, updated_at, categories,
       report_count, occurred_from, occurred_to, latitude, longitude
FROM cases WHERE org_id = $1 AND id = $2;

-- name: case_lock
SELECT id, number, org_id, incident_id, merged_into, title, status, priority,
       priority_reasons::text AS priority_reasons, priority_manual, assignee_id, sla_started_at,
       due_at, outcome, closure_reason, version, created_by, created_at, updated_at, categories,
       report_count, occurred_from, occurred_to, latitude, longitude
FROM cases WHERE org_id = $1 AND id = $2
FOR UPDATE;

-- name: case_insert
INSERT INTO cases (id, org_id, incident_id, title, priority, priority_rank, priority_reasons,
                   priority_manual, assignee_id, sla_started_at, due_at, created_by, created_at,
                   updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13, $13)
ON CONFLICT (org_id, incident_id) WHERE incident_id IS NOT NULL DO NOTHING
RETURNING id;

-- name: case_by_incident
SELECT id FROM cases WHERE org_id = $1 AND incident_id = $2;

-- name: case_update_state
UPDATE cases SET
    status = $2, priority = $3, priority_rank = $4, assignee_id = $5, sla_started_at = $6,
    due_at = $7, outcome = $8, closure_reason = $9, updated_at = $10,
    priority_reasons = coalesce($11::jsonb, priority_reasons),
    priority_manual = coalesce($12, priority_manual),
    version = version + 1
WHERE id = $1
RETURNING id, number, org_id, incident_id, merged_into, title, status, priority,
          priority_reasons::text AS priority_reasons, priority_manual, assignee_id,
          sla_started_at, due_at, outcome, closure_reason, version, created_by, created_at,
          updated_at, categories, report_count, occurred_from, occurred_to, latitude, longitude;

-- name: case_touch
UPDATE cases SET version = version + 1, updated_at = $2
WHERE id = $1
RETURNING id, number, org_id, incident_id, merged_into, title, status, priority,
          priority_reasons::text AS priority_reasons, priority_manual, assignee_id,
          sla_started_at, due_at, outcome, closure_reason, version, created_by, created_at,
          updated_at, categories, report_count, occurred_from, occurred_to, latitude, longitude;

-- name: case_set_incident
UPDATE cases SET incident_id = $3, merged_into = $4 WHERE org_id = $1 AND id = $2;

-- name: case_event_insert
INSERT INTO case_events (org_id, case_id, case_version, kind, actor_kind, actor_id, at,
                         from_state, to_state, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb);

-- name: case_events_list
SELECT id, case_version, kind, actor_kind, actor_id, at, from_state, to_state, detail::text AS detail
FROM case_events
WHERE org_id = $1 AND case_id = $2 AND id > $3
ORDER BY id LIMIT $4;

-- name: case_note_insert
INSERT INTO case_notes (org_id, case_id, author_id, visibility, body)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, case_id, author_id, visibility, body, created_at;

-- name: case_notes_list
SELECT id, case_id, author_id, visibility, body, created_at
FROM case_notes WHERE org_id = $1 AND case_id = $2 ORDER BY created_at, id;

-- name: case_settings_get
SELECT sla::text FROM case_settings WHERE org_id = $1;

-- name: case_settings_version
SELECT version FROM case_settings WHERE org_id = $1;

-- name: case_settings_insert
INSERT INTO case_settings (org_id, sla, updated_by) VALUES ($1, $2::jsonb, $3)
ON CONFLICT (org_id) DO NOTHING
RETURNING version;

-- name: case_settings_update
UPDATE case_settings SET sla = $2::jsonb, updated_by = $3, updated_at = now(), version = version + 1
WHERE org_id = $1 AND version = $4
RETURNING version;

-- name: case_staff_role
SELECT role FROM staff_users WHERE org_id = $1 AND id = $2 AND is_active;

-- name: case_refresh
SELECT case_refresh_summary($1);

-- name: case_incident_reports
SELECT m.report_id, cr.case_id, c.incident_id AS case_incident,
       coalesce(cr.linked_by LIKE 'staff:%', false) AS linked_by_person
FROM incident_members m
JOIN reports r ON r.id = m.report_id AND r.deleted_at IS NULL
LEFT JOIN case_reports cr ON cr.report_id = m.report_id
LEFT JOIN cases c ON c.id = cr.case_id
WHERE m.org_id = $1 AND m.incident_id = $2
ORDER BY m.report_id;

-- name: case_incident_exists
SELECT 1 FROM incidents WHERE org_id = $1 AND id = $2;

-- name: case_reports_to_link
SELECT r.id, r.latitude, r.longitude, cr.case_id
FROM reports r LEFT JOIN case_reports cr ON cr.report_id = r.id
WHERE r.org_id = $1 AND r.id = ANY($2::uuid[]) AND r.deleted_at IS NULL;

-- name: case_report_link
INSERT INTO case_reports (report_id, org_id, case_id, cells, linked_by)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (report_id) DO UPDATE
SET case_id = EXCLUDED.case_id, cells = EXCLUDED.cells, linked_by = EXCLUDED.linked_by,
    linked_at = now();

-- name: case_report_unlink
DELETE FROM case_reports WHERE org_id = $1 AND case_id = $2 AND report_id = $3
RETURNING report_id;

-- name: case_report_ids
SELECT report_id FROM case_reports WHERE case_id = $1 ORDER BY linked_at, report_id;

-- name: case_member_facts
SELECT r.categories, (r.content ->> 'severity')::int AS severity,
       coalesce((r.content ->> 'workers_affected')::int, 1) AS workers_affected
FROM case_reports cr JOIN reports r ON r.id = cr.report_id AND r.deleted_at IS NULL
WHERE cr.case_id = $1;

-- name: case_entity_link
INSERT INTO case_entities (case_id, entity_id, role, org_id, linked_by)
SELECT $2, e.id, $4, $1, $5 FROM entities e
WHERE e.id = $3 AND (e.org_id = $1 OR e.org_id IS NULL) AND e.deleted_at IS NULL
ON CONFLICT DO NOTHING
RETURNING entity_id;

-- name: case_entity_exists
SELECT 1 FROM entities WHERE id = $2 AND (org_id = $1 OR org_id IS NULL) AND deleted_at IS NULL;

-- name: case_person_link
INSERT INTO case_persons (case_id, person_id, org_id, linked_by)
SELECT $2, p.id, $1, $4 FROM persons p WHERE p.org_id = $1 AND p.id = $3
ON CONFLICT DO NOTHING
RETURNING person_id;

-- name: case_person_exists
SELECT 1 FROM persons WHERE org_id = $1 AND id = $2;

-- name: case_copy_links
WITH e AS (
    INSERT INTO case_entities (case_id, entity_id, role, org_id, linked_by)
    SELECT $3, entity_id, role, org_id, $4 FROM case_entities WHERE org_id = $1 AND case_id = $2
    ON CONFLICT DO NOTHING RETURNING 1
)
INSERT INTO case_persons (case_id, person_id, org_id, linked_by)
SELECT $3, person_id, org_id, $4 FROM case_persons WHERE org_id = $1 AND case_id = $2
ON CONFLICT DO NOTHING;

-- name: case_links
SELECT 'report' AS kind, cr.report_id AS id, NULL::text AS role, 'case' AS source
FROM case_reports cr WHERE cr.org_id = $1 AND cr.case_id = $2
UNION ALL
SELECT 'entity', ce.entity_id, ce.role, 'case' FROM case_entities ce
WHERE ce.org_id = $1 AND ce.case_id = $2
UNION ALL
SELECT DISTINCT 'entity', el.entity_id, el.role, 'matching'
FROM case_reports cr JOIN entity_links el ON el.report_id = cr.report_id
WHERE cr.org_id = $1 AND cr.case_id = $2
UNION ALL
SELECT 'person', cp.person_id, NULL, 'case' FROM case_persons cp
WHERE cp.org_id = $1 AND cp.case_id = $2
UNION ALL
SELECT DISTINCT 'person', pm.person_id, NULL, 'matching'
FROM case_reports cr JOIN person_members pm ON pm.report_id = cr.report_id
WHERE cr.org_id = $1 AND cr.case_id = $2 AND pm.person_id IS NOT NULL;

-- name: case_report_facts
SELECT r.categories, (r.content ->> 'severity')::int AS severity,
       coalesce((r.content ->> 'workers_affected')::int, 1) AS workers_affected
FROM reports r WHERE r.org_id = $1 AND r.id = ANY($2::uuid[]) AND r.deleted_at IS NULL;

-- Tasks to monitors.

-- name: task_insert
INSERT INTO case_tasks (org_id, case_id, monitor_id, report_id, prompt, due_at, created_by)
SELECT $1, $2, m.id, $4, $5, $6, $7 FROM monitors m
WHERE m.org_id = $1 AND m.id = $3 AND m.is_active
RETURNING id, case_id, monitor_id, report_id, prompt, due_at, status, version, answer,
          answer_attachments::text AS answer_attachments, answered_at, answered_by_device,
          created_by, created_at, updated_at;

-- name: task_case_has_report
SELECT 1 FROM case_reports WHERE case_id = $1 AND report_id = $2;

-- name: task_peek
SELECT org_id, case_id, monitor_id, status, version FROM case_tasks WHERE id = $1;

-- name: task_answer
UPDATE case_tasks SET status = 'answered', answer = $2, answer_attachments = $3::jsonb,
    answered_at = $4, answered_by_device = $5, answer_mutation_id = $6, version = version + 1,
    updated_at = now()
WHERE id = $1 AND status = 'open'
RETURNING id, case_id, monitor_id, report_id, prompt, due_at, status, version, answer,
          answer_attachments::text AS answer_attachments, answered_at, answered_by_device,
          created_by, created_at, updated_at;

-- name: task_cancel
UPDATE case_tasks SET status = 'cancelled', version = version + 1, updated_at = now()
WHERE org_id = $1 AND case_id = $2 AND id = $3 AND status = 'open'
RETURNING id, case_id, monitor_id, report_id, prompt, due_at, status, version, answer,
          answer_attachments::text AS answer_attachments, answered_at, answered_by_device,
          created_by, created_at, updated_at;

-- name: task_status
SELECT status FROM case_tasks WHERE org_id = $1 AND case_id = $2 AND id = $3;

-- name: tasks_of_case
SELECT id, case_id, monitor_id, report_id, prompt, due_at, status, version, answer,
       answer_attachments::text AS answer_attachments, answered_at, answered_by_device,
       created_by, created_at, updated_at
FROM case_tasks WHERE org_id = $1 AND case_id = $2 ORDER BY created_at, id;

-- Partners, consents and referrals.

-- name: partner_insert
INSERT INTO partners (org_id, kind, name, contact, country) VALUES ($1, $2, $3, $4, $5)
RETURNING id, kind, name, contact, country, is_active, version, created_at, updated_at;

-- name: partner_update
UPDATE partners SET kind = $3, name = $4, contact = $5, country = $6, is_active = $7,
    version = version + 1, updated_at = now()
WHERE org_id = $1 AND id = $2 AND version = $8
RETURNING id, kind, name, contact, country, is_active, version, created_at, updated_at;

-- name: partner_get
SELECT id, kind, name, contact, country, is_active, version, created_at, updated_at
FROM partners WHERE org_id = $1 AND id = $2;

-- name: partners_list
SELECT id, kind, name, contact, country, is_active, version, created_at, updated_at
FROM partners WHERE org_id = $1 AND ($2 OR is_active) ORDER BY name, id;

-- name: consent_insert
INSERT INTO consents (org_id, case_id, action, purposes, partner_kinds, method, expires_at, note,
                      recorded_by, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING id, case_id, action, purposes, partner_kinds, method, expires_at, note, recorded_by,
          recorded_at;

-- name: consents_of_case
SELECT id, case_id, action, purposes, partner_kinds, method, expires_at, note, recorded_by,
       recorded_at
FROM consents WHERE org_id = $1 AND case_id = $2 ORDER BY recorded_at, id;

-- name: report_consents_of_case
SELECT r.id, r.monitor_id, r.received_at, r.content -> 'consent' AS consent
FROM case_reports cr JOIN reports r ON r.id = cr.report_id AND r.deleted_at IS NULL
WHERE cr.org_id = $1 AND cr.case_id = $2
ORDER BY r.received_at, r.id;

-- name: referral_insert
INSERT INTO referrals (id, org_id, case_id, partner_id, partner_kind, decision, override, fields,
                       sealed_payload, created_by)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)
RETURNING id, case_id, partner_id, partner_kind, decision::text AS decision, override, fields,
          status, outcome_note, version, created_by, created_at, updated_at;

-- name: referral_set_outcome
UPDATE referrals SET status = $4, outcome_note = $5, version = version + 1, updated_at = now()
WHERE org_id = $1 AND case_id = $2 AND id = $3
RETURNING id, case_id, partner_id, partner_kind, decision::text AS decision, override, fields,
          status, outcome_note, version, created_by, created_at, updated_at;

-- name: referrals_of_case
SELECT id, case_id, partner_id, partner_kind, decision::text AS decision, override, fields,
       status, outcome_note, version, created_by, created_at, updated_at
FROM referrals WHERE org_id = $1 AND case_id = $2 ORDER BY created_at, id;

-- The case list is composed from the fragments below (storage/case_list.py): a static query with
-- "($n IS NULL OR ...)" for every optional filter gets a generic plan that cannot use the right
-- index. Each fragment takes its parameter number in place of {}; $1 is always the org.

-- name: case_list_select
SELECT c.id, c.number, c.title, c.status, c.priority, c.priority_rank, c.assignee_id, c.due_at,
       c.created_at, c.updated_at, c.categories, c.report_count, c.occurred_from, c.occurred_to,
       c.latitude, c.longitude, c.version, c.incident_id,
       (c.status IN ('new', 'triage', 'open', 'referred', 'follow_up', 'reopened')
        AND c.due_at < now()) AS overdue
FROM cases c
WHERE c.org_id = $1

-- name: case_counts_select
SELECT c.status, count(*) AS n FROM cases c WHERE c.org_id = $1

-- name: case_filter_status
c.status = ANY({}::text[])

-- name: case_filter_priority
c.priority = ANY({}::text[])

-- name: case_filter_assignee
c.assignee_id = {}

-- name: case_filter_unassigned
c.assignee_id IS NULL

-- name: case_filter_category
c.categories && {}::text[]

-- name: case_filter_cell
-- Overlap with one cell is containment, and (unlike @>) needs no recheck of the TOASTed array.
c.cells && ARRAY[{}::text]

-- name: case_filter_entity
c.id IN (SELECT cr.case_id FROM entity_links el
         JOIN case_reports cr ON cr.report_id = el.report_id
         WHERE el.org_id = $1 AND el.entity_id = {0}
         UNION
         SELECT ce.case_id FROM case_entities ce WHERE ce.org_id = $1 AND ce.entity_id = {0})

-- name: case_filter_created_from
c.created_at >= {}

-- name: case_filter_created_to
c.created_at < {}

-- name: case_filter_overdue
c.status IN ('new', 'triage', 'open', 'referred', 'follow_up', 'reopened') AND c.due_at < now()

-- name: case_filter_not_overdue
NOT (c.status IN ('new', 'triage', 'open', 'referred', 'follow_up', 'reopened') AND c.due_at < now())

-- name: case_filter_search
c.search @@ websearch_to_tsquery('simple', {})

-- name: case_after_created
(c.created_at, c.id) < ({0}, {1})

-- name: case_after_updated
(c.updated_at, c.id) < ({0}, {1})

-- name: case_after_due
(c.due_at, c.id) > ({0}, {1})

-- name: case_after_priority
(c.priority_rank < {0} OR (c.priority_rank = {0} AND (c.due_at, c.id) > ({1}, {2})))

-- name: case_order_created
ORDER BY c.created_at DESC, c.id DESC

-- name: case_order_updated
ORDER BY c.updated_at DESC, c.id DESC

-- name: case_order_due
ORDER BY c.due_at, c.id

-- name: case_order_priority
ORDER BY c.priority_rank DESC, c.due_at, c.id

-- name: conflict_report
-- The report a conflict belongs to (never changes), read before locking the report and then the
-- conflict (storage/conflicts.py resolve_conflict).
SELECT report_id FROM report_conflicts WHERE org_id = $1 AND id = $2;

-- name: cases_of_report
-- The case following a report (at most one), with where the report is now.
SELECT cr.case_id, r.latitude, r.longitude, r.deleted_at IS NOT NULL AS withdrawn
FROM case_reports cr JOIN reports r ON r.id = cr.report_id
WHERE cr.org_id = $1 AND cr.report_id = $2
ORDER BY cr.case_id;

-- name: case_report_cells
UPDATE case_reports SET cells = $3 WHERE org_id = $1 AND report_id = $2;
