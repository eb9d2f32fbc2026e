-- name: match_horizon
-- Every transaction with an id below this has ended: what the next corpus read starts from.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon;

-- name: incident_corpus
-- The org's matched reports whose membership a transaction at or after the horizon $2 wrote
-- (a process's index: every matched report, read again only from the band of transactions
-- that were running at its last read; a row it has read at the same `xid` is skipped by the
-- caller). A report amended, withdrawn or redacted has its membership written again
-- (`touch_incident_member`), so every process reads it again: withdrawn ones to drop.
SELECT r.id, m.xid::text AS xid, r.deleted_at IS NOT NULL AS withdrawn, r.occurred_at,
       r.latitude, r.longitude, r.categories, r.monitor_id::text AS monitor_id,
       r.content->'employer' AS employer, r.content->>'narrative' AS narrative
FROM incident_members m JOIN reports r ON r.id = m.report_id
WHERE m.org_id = $1 AND m.xid >= $2::text::xid8
ORDER BY m.xid, r.id;

-- name: person_corpus
-- As incident_corpus; a redacted report (no sealed part left) is read to be dropped too.
SELECT r.id, m.xid::text AS xid, r.deleted_at IS NOT NULL AS withdrawn, r.sealed,
       r.content->>'origin_country' AS origin_country
FROM person_members m JOIN reports r ON r.id = m.report_id
WHERE m.org_id = $1 AND m.xid >= $2::text::xid8
ORDER BY m.xid, r.id;

-- name: touch_incident_member
-- A report's matching features changed: stamp its membership with this transaction so that
-- every process reads it again. Its xid, or no row when the report has no incident yet.
UPDATE incident_members SET xid = pg_current_xact_id() WHERE report_id = $1
RETURNING xid::text;

-- name: touch_person_member
UPDATE person_members SET xid = pg_current_xact_id() WHERE report_id = $1
RETURNING xid::text;

-- name: person_alone_undecided
-- Whether a report is alone in its person and nobody on staff has decided about it: such a
-- report may join another person as the matcher's own decision (after a refit or an amendment).
SELECT NOT EXISTS (
         SELECT 1 FROM person_members o
         WHERE o.person_id = m.person_id AND o.report_id <> m.report_id)
   AND NOT EXISTS (
         SELECT 1 FROM match_decisions d
         WHERE d.org_id = m.org_id AND d.job = 'person' AND d.subject_id = m.report_id::text
           AND d.decided_by <> 'matcher')
FROM person_members m WHERE m.report_id = $1;

-- name: decided_partners
-- The reports a report has a decision with, either way round, in any state but a link the
-- matcher undid itself: an amended report is not suggested again with them.
SELECT CASE WHEN subject_id = $3 THEN candidate_id ELSE subject_id END AS partner
FROM match_decisions
WHERE org_id = $1 AND job = $2 AND (subject_id = $3 OR candidate_id = $3)
  AND NOT (status = 'undone' AND decided_by = 'matcher');

-- name: lock_matching
-- One org's matching for one dedup job, one transaction at a time (across worker processes): a
-- report is matched against every report matched before it, committed.
SELECT pg_advisory_xact_lock(hashtext('fairwatch.matching'), hashtext($1::uuid::text || ':' || $2::text));

-- name: entity_corpus
SELECT e.id, e.kind, e.legal_name, e.aliases, e.registration_number, e.phones, e.country,
       e.address, coalesce(array_agg(l.number) FILTER (WHERE l.number IS NOT NULL), '{}') AS licences
FROM entities e LEFT JOIN entity_licences l ON l.entity_id = e.id
WHERE (e.org_id = $1 OR e.org_id IS NULL) AND e.deleted_at IS NULL
GROUP BY e.id;

-- name: entity_mentions
-- What the org's monitors wrote about employers and recruiters, for fitting its entity model.
SELECT id, nullif(content->'employer', 'null') AS employer,
       nullif(content->'recruiter', 'null') AS recruiter,
       content->>'origin_country' AS origin_country,
       content->>'destination_country' AS destination_country
FROM reports
WHERE org_id = $1 AND deleted_at IS NULL
  AND (jsonb_typeof(content->'employer') = 'object'
       OR jsonb_typeof(content->'recruiter') = 'object')
ORDER BY received_at, id;

-- name: entity_corpus_stamp
-- Changes whenever an entity of the org's registry (or the shared one) is added, edited or
-- removed: its row's writing transaction (xmin) changes, whatever order edits commit in (the
-- newest updated_at alone misses an edit that commits after a later-started one).
SELECT count(*) AS n, max(updated_at) AS latest, sum(xmin::text::bigint) AS writes
FROM entities
WHERE (org_id = $1 OR org_id IS NULL);

-- name: report_for_matching
SELECT id, org_id, monitor_id, version, content::text AS content, sealed, deleted_at
FROM reports WHERE org_id = $1 AND id = $2;

-- name: report_apart_noted
-- Whether the case's timeline already says that this version of the report stands apart.
SELECT EXISTS (
    SELECT 1 FROM case_events
    WHERE case_id = $1 AND kind = 'report_apart' AND detail->>'report' = $2
      AND (detail->>'report_version')::int = $3);

-- name: incident_of_report
SELECT incident_id FROM incident_members WHERE report_id = $1;

-- name: incident_membership
-- A report's incident and the decision that put it there (none: it opened the incident).
SELECT incident_id, decision_id FROM incident_members WHERE report_id = $1;

-- name: person_of_report
SELECT person_id FROM person_members WHERE report_id = $1;

-- name: incident_group_of_report
-- The reports of a candidate's incident (itself included), oldest first: what a new report
-- must agree with on average to join it.
SELECT other.report_id::text AS report_id
FROM incident_members own JOIN incident_members other ON other.incident_id = own.incident_id
WHERE own.report_id = $1
ORDER BY other.linked_at, other.report_id LIMIT 50;

-- name: person_group_of_report
SELECT other.report_id::text AS report_id
FROM person_members own JOIN person_members other ON other.person_id = own.person_id
WHERE own.report_id = $1
ORDER BY other.linked_at, other.report_id LIMIT 50;

-- name: person_member_rows
-- Every report of a person with the decision that put it there, locked: a merge moves them all.
SELECT report_id, decision_id FROM person_members
WHERE org_id = $1 AND person_id = $2 ORDER BY report_id FOR UPDATE;

-- name: move_person_member
-- Into person $3 with decision $4, if the report is still in person $5 (undoing a merge puts
-- back only the reports the merge moved that are still where it put them).
UPDATE person_members SET person_id = $3, decision_id = $4, linked_at = now(),
    xid = pg_current_xact_id()
WHERE org_id = $1 AND report_id = $2 AND person_id = $5;

-- name: person_singletons
-- Reports alone in their person that nobody on staff has decided about (as the subject of a
-- decision), newest first, before a cursor (none: from the newest): what a refitted model
-- matches again.
SELECT m.report_id, r.received_at
FROM person_members m JOIN reports r ON r.id = m.report_id
WHERE m.org_id = $1 AND m.person_id IS NOT NULL AND r.deleted_at IS NULL
  AND ($2::timestamptz IS NULL OR (r.received_at, r.id) < ($2, $3))
  AND NOT EXISTS (
        SELECT 1 FROM person_members o
        WHERE o.person_id = m.person_id AND o.report_id <> m.report_id)
  AND NOT EXISTS (
        SELECT 1 FROM match_decisions d
        WHERE d.org_id = $1 AND d.job = 'person' AND d.subject_id = m.report_id::text
          AND d.decided_by <> 'matcher')
ORDER BY r.received_at DESC, r.id DESC LIMIT $4;

-- name: link_or_settle_decision
-- The matcher's link of a pair after a refit or a change (rejoin): a new decision, or the pair's
-- suggestion still awaiting review, or a link the matcher itself undid, becoming it, with the
-- new model's score and what the link replaced. No row when the pair has a decision in any
-- other state.
INSERT INTO match_decisions (org_id, job, subject_id, candidate_id, probability, total_weight,
                             explanation, suggestion, status, decided_by, previous, model_version)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, 'link', 'auto_linked', 'matcher', $8::jsonb, $9)
ON CONFLICT (org_id, job, subject_id, candidate_id) DO UPDATE
SET probability = excluded.probability, total_weight = excluded.total_weight,
    explanation = excluded.explanation, suggestion = 'link', status = 'auto_linked',
    decided_by = 'matcher', decided_at = now(), previous = excluded.previous,
    model_version = excluded.model_version
WHERE match_decisions.status = 'pending_review'
   OR (match_decisions.status = 'undone' AND match_decisions.decided_by = 'matcher')
RETURNING id;

-- name: insert_incident
INSERT INTO incidents (org_id) VALUES ($1) RETURNING id;

-- name: insert_person
INSERT INTO persons (org_id) VALUES ($1) RETURNING id;

-- name: set_incident_member
INSERT INTO incident_members (report_id, org_id, incident_id, decision_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (report_id) DO UPDATE
SET incident_id = excluded.incident_id, decision_id = excluded.decision_id, linked_at = now(),
    xid = pg_current_xact_id()
RETURNING xid::text;

-- name: set_person_member
INSERT INTO person_members (report_id, org_id, person_id, decision_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (report_id) DO UPDATE
SET person_id = excluded.person_id, decision_id = excluded.decision_id, linked_at = now(),
    xid = pg_current_xact_id()
RETURNING xid::text;

-- name: entity_link_of
SELECT entity_id FROM entity_links WHERE report_id = $1 AND role = $2;

-- name: set_entity_link
INSERT INTO entity_links (report_id, role, org_id, entity_id, decision_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (report_id, role) DO UPDATE
SET entity_id = excluded.entity_id, decision_id = excluded.decision_id, linked_at = now();

-- name: entity_link_state
-- A report role's entity link and how it was made: by the case team (an accepted decision),
-- by the matcher (an automatic one), or neither (the monitor's pick, or a link put back).
SELECT l.entity_id, l.decision_id, d.status = 'accepted' AS by_staff
FROM entity_links l LEFT JOIN match_decisions d ON d.id = l.decision_id
WHERE l.report_id = $1 AND l.role = $2;

-- name: delete_entity_link_if
-- The link of a report role, if it is still to this entity by this decision; true if deleted.
DELETE FROM entity_links
WHERE report_id = $1 AND role = $2 AND entity_id = $3 AND decision_id IS NOT DISTINCT FROM $4
RETURNING true;

-- name: delete_entity_link
DELETE FROM entity_links WHERE report_id = $1 AND role = $2;

-- name: insert_decision
-- A pair decided before keeps its decision, unless it is a link the matcher undid itself (its
-- report changed): a new decision of the matcher takes its place.
INSERT INTO match_decisions (org_id, job, subject_id, candidate_id, probability, total_weight,
                             explanation, suggestion, status, decided_by, previous, model_version)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11::jsonb, $12)
ON CONFLICT (org_id, job, subject_id, candidate_id) DO UPDATE
SET probability = excluded.probability, total_weight = excluded.total_weight,
    explanation = excluded.explanation, suggestion = excluded.suggestion,
    status = excluded.status, decided_by = excluded.decided_by, decided_at = now(),
    previous = excluded.previous, model_version = excluded.model_version
WHERE match_decisions.status = 'undone' AND match_decisions.decided_by = 'matcher'
RETURNING id;

-- name: lock_decision
SELECT id, job, subject_id, candidate_id, status, previous::text AS previous
FROM match_decisions WHERE org_id = $1 AND id = $2 FOR UPDATE;

-- name: matcher_merges_by
-- The matcher's merges of persons that a report's arrival made and that still stand, newest
-- first, locked (`storage.matching._merge_linked_persons`).
SELECT id, previous::text AS previous FROM match_decisions
WHERE org_id = $1 AND job = 'person' AND subject_id = $2 AND status = 'auto_linked'
  AND decided_by = 'matcher' AND previous ? 'members'
ORDER BY decided_at DESC, id DESC
FOR UPDATE;

-- name: set_decision_status
UPDATE match_decisions SET status = $3, decided_by = $4, decided_at = now(),
    previous = coalesce($5::jsonb, previous)
WHERE org_id = $1 AND id = $2;

-- name: list_decisions
-- A suggestion whose two sides are together already (one incident, one person, the mention
-- linked to that entity: joined since by another decision) asks nothing, so the review queue
-- leaves it out; it is back if they are split again. CASE keeps each job's casts to its rows.
SELECT id, job, subject_id, candidate_id, probability, total_weight, explanation::text AS explanation,
       suggestion, status, decided_by, decided_at, model_version
FROM match_decisions d
WHERE org_id = $1 AND ($2::text IS NULL OR job = $2) AND ($3::text IS NULL OR status = $3)
  AND (decided_at, id) > ($4, $5)
  AND NOT (status = 'pending_review' AND CASE job
        WHEN 'incident' THEN EXISTS (
            SELECT 1 FROM incident_members a JOIN incident_members b USING (incident_id)
            WHERE a.report_id = d.subject_id::uuid AND b.report_id = d.candidate_id::uuid)
        WHEN 'person' THEN EXISTS (
            SELECT 1 FROM person_members a JOIN person_members b USING (person_id)
            WHERE a.report_id = d.subject_id::uuid AND b.report_id = d.candidate_id::uuid)
        ELSE EXISTS (
            SELECT 1 FROM entity_links l
            WHERE l.report_id = split_part(d.subject_id, ':', 1)::uuid
              AND l.role = split_part(d.subject_id, ':', 2)
              AND l.entity_id = d.candidate_id::uuid)
      END)
ORDER BY decided_at, id LIMIT $6;

-- name: get_decision
SELECT id, job, subject_id, candidate_id, probability, total_weight, explanation::text AS explanation,
       suggestion, status, decided_by, decided_at, model_version
FROM match_decisions WHERE org_id = $1 AND id = $2;

-- name: incident_members_list
SELECT m.report_id, m.linked_at, m.decision_id, r.occurred_at, r.categories, r.received_at
FROM incident_members m JOIN reports r ON r.id = m.report_id
WHERE m.org_id = $1 AND m.incident_id = $2 ORDER BY r.received_at;

-- name: person_reports_list
SELECT m.report_id, m.linked_at, m.decision_id, r.occurred_at, r.received_at
FROM person_members m JOIN reports r ON r.id = m.report_id
WHERE m.org_id = $1 AND m.person_id = $2 ORDER BY r.received_at;

-- name: entity_reports_list
SELECT l.report_id, l.role, l.linked_at, l.decision_id, r.occurred_at, r.received_at
FROM entity_links l JOIN reports r ON r.id = l.report_id
WHERE l.org_id = $1 AND l.entity_id = $2 ORDER BY r.received_at;

-- name: incident_exists
SELECT 1 FROM incidents WHERE org_id = $1 AND id = $2;

-- name: person_exists
SELECT 1 FROM persons WHERE org_id = $1 AND id = $2;

-- name: incident_clusters
SELECT incident_id, array_agg(report_id ORDER BY report_id) AS members
FROM incident_members WHERE org_id = $1 GROUP BY incident_id HAVING count(*) >= $2
ORDER BY incident_id LIMIT $3;

-- name: person_clusters
SELECT person_id, array_agg(report_id ORDER BY report_id) AS members
FROM person_members WHERE org_id = $1 AND person_id IS NOT NULL
GROUP BY person_id HAVING count(*) >= $2
ORDER BY person_id LIMIT $3;

-- name: entity_clusters
SELECT entity_id, array_agg(report_id::text || ':' || role ORDER BY report_id) AS members
FROM entity_links WHERE org_id = $1 GROUP BY entity_id HAVING count(*) >= $2
ORDER BY entity_id LIMIT $3;

-- name: match_labels
-- The case team's decisions (a link the matcher undid itself, its report having changed, says
-- nothing about the pair).
SELECT job, subject_id, candidate_id, status FROM match_decisions
WHERE org_id = $1 AND job = $2 AND status IN ('accepted', 'rejected', 'undone')
  AND decided_by <> 'matcher';

-- name: leave_person
-- The report no longer names a worker: it leaves its person (see migration 0018).
UPDATE person_members SET person_id = NULL, decision_id = NULL, linked_at = now(),
    xid = pg_current_xact_id()
WHERE report_id = $1;

-- name: matcher_person_link
-- The matcher's own link that put a report in its person, if that is how it got there.
SELECT d.id, d.previous::text AS previous
FROM person_members m JOIN match_decisions d ON d.id = m.decision_id
WHERE m.report_id = $1 AND d.status = 'auto_linked' AND d.decided_by = 'matcher';

-- name: get_match_model
SELECT model::text AS model FROM match_models WHERE org_id = $1 AND job = $2;

-- name: put_match_model
INSERT INTO match_models (org_id, job, model) VALUES ($1, $2, $3::jsonb)
ON CONFLICT (org_id, job) DO UPDATE SET model = excluded.model, fitted_at = now();

-- name: entity_cases
SELECT DISTINCT case_id FROM (
    SELECT cr.case_id FROM entity_links l JOIN case_reports cr ON cr.report_id = l.report_id
    WHERE l.org_id = $1 AND l.entity_id = $2
    UNION
    SELECT ce.case_id FROM case_entities ce WHERE ce.org_id = $1 AND ce.entity_id = $2
) linked ORDER BY case_id;

-- name: refits_due
-- Every (org, job) whose data or whose team's decisions changed since its last refit (fitted or
-- not: an org too small to fit is tried again only once something new arrives), or never refit.
-- A report's row is written (updated_at) when it is stored, amended or withdrawn: a held report
-- released late carries the time it first arrived as received_at, long before it was stored.
SELECT o.id AS org_id, j.job
FROM orgs o
CROSS JOIN unnest(ARRAY['incident', 'entity', 'person']) AS j (job)
LEFT JOIN match_refit_attempts a ON a.org_id = o.id AND a.job = j.job
WHERE EXISTS (
        SELECT 1 FROM reports r
        WHERE r.org_id = o.id AND r.updated_at > coalesce(a.attempted_at, '-infinity'))
   OR EXISTS (
        SELECT 1 FROM match_decisions d
        WHERE d.org_id = o.id AND d.job = j.job AND d.decided_by <> 'matcher'
          AND d.decided_at > coalesce(a.attempted_at, '-infinity'))
ORDER BY o.id, j.job;

-- name: record_refit_attempt
INSERT INTO match_refit_attempts (org_id, job, outcome) VALUES ($1, $2, $3)
ON CONFLICT (org_id, job) DO UPDATE SET attempted_at = now(), outcome = excluded.outcome;
