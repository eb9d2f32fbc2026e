-- Case management: cases opened from incidents (or by hand), their links to reports, entities and
-- persons, an append-only timeline, notes, tasks sent to monitors, partners, consent records and
-- referrals, and per-organisation SLA settings. See docs/decisions/0111-case-storage.md.

CREATE TABLE case_settings (
    org_id      uuid PRIMARY KEY REFERENCES orgs (id),
    -- cases.workflow.SlaPolicy as JSON (durations in ISO 8601); validated by the application.
    sla         jsonb NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    updated_by  uuid REFERENCES staff_users (id),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE case_number_seq;

CREATE TABLE cases (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id            uuid NOT NULL REFERENCES orgs (id),
    -- A short number people say on the phone ("case 10234"); unique across the deployment.
    number            bigint NOT NULL UNIQUE DEFAULT nextval('case_number_seq'),
    -- Same organisation as the case (checked on write); a deleted incident leaves the case.
    incident_id       uuid REFERENCES incidents (id) ON DELETE SET NULL,
    title             text NOT NULL DEFAULT '' CHECK (length(title) <= 300),
    status            text NOT NULL DEFAULT 'new' CHECK (status IN
                      ('new', 'triage', 'open', 'referred', 'follow_up', 'resolved', 'closed', 'reopened')),
    priority          text NOT NULL CHECK (priority IN ('critical', 'high', 'normal', 'low')),
    -- 3 critical .. 0 low: sorts "most urgent first" with a plain btree.
    priority_rank     smallint NOT NULL CHECK (priority_rank BETWEEN 0 AND 3),
    priority_reasons  jsonb NOT NULL DEFAULT '[]'::jsonb,
    priority_manual   boolean NOT NULL DEFAULT false,
    assignee_id       uuid REFERENCES staff_users (id),
    sla_started_at    timestamptz NOT NULL,
    due_at            timestamptz NOT NULL,
    outcome           text CHECK (outcome IN ('remedied', 'partially_remedied', 'referred_elsewhere',
                      'worker_withdrew', 'unreachable', 'duplicate', 'not_actionable', 'no_consent')),
    closure_reason    text,
    version           integer NOT NULL DEFAULT 1,
    created_by        text NOT NULL,          -- 'staff:<uuid>' or 'system:matching'
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    -- Summary of the member reports, refreshed by case_refresh_summary (list filters and search).
    categories        text[] NOT NULL DEFAULT '{}',
    cells             text[] NOT NULL DEFAULT '{}',   -- H3 cells of member reports, res 3..7
    report_count      integer NOT NULL DEFAULT 0,
    occurred_from     timestamptz,
    occurred_to       timestamptz,
    latitude          double precision,                -- centroid of member reports (exports)
    longitude         double precision,
    search            tsvector NOT NULL DEFAULT ''::tsvector,
    -- Set when matching merged this case's incident into another: where its reports went.
    merged_into       uuid REFERENCES cases (id),
    UNIQUE (org_id, id),
    CHECK ((status = 'closed') = (outcome IS NOT NULL))
) WITH (toast_tuple_target = 256);
-- Wide summary values (search vector, cells, reasons) go to TOAST, so the heap the list and the
-- counts per state scan stays narrow: about five times more cases per page (bench/results/cases.md).
ALTER TABLE cases ALTER COLUMN search SET STORAGE EXTERNAL;
ALTER TABLE cases ALTER COLUMN cells SET STORAGE EXTERNAL;
-- One case per incident: opening a case for an incident is idempotent.
CREATE UNIQUE INDEX cases_incident_key ON cases (org_id, incident_id) WHERE incident_id IS NOT NULL;
-- The list's sort orders, each with id as tie-breaker for keyset pagination.
CREATE INDEX cases_created_idx ON cases (org_id, created_at DESC, id DESC);
CREATE INDEX cases_status_created_idx ON cases (org_id, status, created_at DESC, id DESC);
CREATE INDEX cases_due_idx ON cases (org_id, due_at, id);
CREATE INDEX cases_priority_idx ON cases (org_id, priority_rank DESC, due_at, id);
CREATE INDEX cases_updated_idx ON cases (org_id, updated_at DESC, id DESC);
CREATE INDEX cases_assignee_idx ON cases (org_id, assignee_id, status);
-- Overdue: only cases whose SLA clock runs (cases.workflow.SLA_RUNNING); status is included so
-- the counts per state of the overdue filter are an index-only scan.
CREATE INDEX cases_overdue_idx ON cases (org_id, due_at, status)
    WHERE status IN ('new', 'triage', 'open', 'referred', 'follow_up', 'reopened');
CREATE INDEX cases_categories_idx ON cases USING gin (categories);
CREATE INDEX cases_cells_idx ON cases USING gin (cells);
CREATE INDEX cases_search_idx ON cases USING gin (search);

-- Reports followed in a case. A report is followed in at most one case.
CREATE TABLE case_reports (
    report_id  uuid PRIMARY KEY REFERENCES reports (id),
    org_id     uuid NOT NULL REFERENCES orgs (id),
    case_id    uuid NOT NULL,
    cells      text[] NOT NULL DEFAULT '{}',  -- the report's H3 cells at link time, res 3..7
    linked_by  text NOT NULL,
    linked_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, case_id) REFERENCES cases (org_id, id)
);
CREATE INDEX case_reports_case_idx ON case_reports (case_id);

-- Entities and persons a case manager linked by hand (those linked to member reports by the
-- matching engine are read through entity_links and person_members).
CREATE TABLE case_entities (
    case_id    uuid NOT NULL,
    entity_id  uuid NOT NULL REFERENCES entities (id),
    role       text NOT NULL CHECK (role IN ('employer', 'recruiter')),
    org_id     uuid NOT NULL REFERENCES orgs (id),
    linked_by  text NOT NULL,
    linked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, entity_id, role),
    FOREIGN KEY (org_id, case_id) REFERENCES cases (org_id, id)
);
CREATE INDEX case_entities_entity_idx ON case_entities (org_id, entity_id);

CREATE TABLE case_persons (
    case_id    uuid NOT NULL,
    person_id  uuid NOT NULL,
    org_id     uuid NOT NULL REFERENCES orgs (id),
    linked_by  text NOT NULL,
    linked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, person_id),
    FOREIGN KEY (org_id, case_id) REFERENCES cases (org_id, id),
    FOREIGN KEY (org_id, person_id) REFERENCES persons (org_id, id)
);

-- The timeline: every change to a case, with actor and time. Append-only.
CREATE TABLE case_events (
    id            bigserial PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs (id),
    case_id       uuid NOT NULL,
    case_version  integer NOT NULL,
    kind          text NOT NULL CHECK (kind ~ '^[a-z][a-z_]{1,40}$'),
    actor_kind    text NOT NULL CHECK (actor_kind IN ('staff', 'device', 'system')),
    actor_id      text NOT NULL,
    at            timestamptz NOT NULL,
    from_state    text,
    to_state      text,
    detail        jsonb NOT NULL DEFAULT '{}'::jsonb,
    FOREIGN KEY (org_id, case_id) REFERENCES cases (org_id, id)
);
CREATE INDEX case_events_case_idx ON case_events (case_id, id);

CREATE FUNCTION case_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'case_events is append-only: % is not allowed', TG_OP
        USING HINT = 'record a new event instead of changing history';
END
$$;

CREATE TRIGGER case_events_append_only
    BEFORE UPDATE OR DELETE ON case_events
    FOR EACH STATEMENT EXECUTE FUNCTION case_events_refuse_change();

CREATE TABLE case_notes (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES orgs (id),
    case_id     uuid NOT NULL,
    author_id   uuid NOT NULL REFERENCES staff_users (id),
    visibility  text NOT NULL CHECK (visibility IN ('internal', 'shareable')),
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, case_id) REFERENCES cases (org_id, id)
);
CREATE INDEX case_notes_case_idx ON case_notes (case_id, created_at);

-- Tasks sent to a monitor's device ("collect the contract"), answered through sync push.
CREATE TABLE case_tasks (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id              uuid NOT NULL REFERENCES orgs (id),
    case_id             uuid NOT NULL,
    monitor_id          uuid NOT NULL,
    report_id           uuid REFERENCES reports (id),
    prompt              text NOT NULL CHECK (length(prompt) BETWEEN 1 AND 5000),
    due_at              timestamptz,
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'cancelled')),
    -- Feed version: bumped on every change the device must learn about.
    version             integer NOT NULL DEFAULT 1,
    answer              text,
    answer_attachments  jsonb NOT NULL DEFAULT '[]'::jsonb,
    answered_at         timestamptz,
    answered_by_device  uuid,
    answer_mutation_id  uuid,
    created_by          uuid NOT NULL REFERENCES staff_users (id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, case_id) REFERENCES cases (org_id, id),
    FOREIGN KEY (org_id, monitor_id) REFERENCES monitors (org_id, id)
);
CREATE INDEX case_tasks_case_idx ON case_tasks (case_id, created_at);
CREATE INDEX case_tasks_monitor_idx ON case_tasks (org_id, monitor_id, status);

-- Partner organisations a case can be referred to, registered per organisation.
CREATE TABLE partners (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES orgs (id),
    kind        text NOT NULL CHECK (kind IN
                ('legal_aid', 'shelter', 'embassy', 'union', 'health', 'labour_inspectorate')),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 300),
    contact     text NOT NULL DEFAULT '' CHECK (length(contact) <= 2000),
    country     text CHECK (country ~ '^[A-Z]{2}$'),
    is_active   boolean NOT NULL DEFAULT true,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    UNIQUE (org_id, name)
);

-- Consent statements of the worker(s) of a case, recorded by staff after the report (the flags
-- in the report itself are the first statement). Append-only: a withdrawal is a new row.
CREATE TABLE consents (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id         uuid NOT NULL REFERENCES orgs (id),
    case_id        uuid NOT NULL,
    action         text NOT NULL CHECK (action IN ('granted', 'withdrawn')),
    purposes       text[] NOT NULL CHECK (purposes <@ ARRAY['follow_up', 'referral', 'sharing']
                                          AND cardinality(purposes) >= 1),
    partner_kinds  text[],
    method         text NOT NULL CHECK (method IN ('verbal', 'written', 'in_app')),
    expires_at     timestamptz,
    note           text CHECK (length(note) <= 2000),
    recorded_by    text NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, case_id) REFERENCES cases (org_id, id)
);
CREATE INDEX consents_case_idx ON consents (case_id, recorded_at);

CREATE TRIGGER consents_append_only
    BEFORE UPDATE OR DELETE ON consents
    FOR EACH STATEMENT EXECUTE FUNCTION case_events_refuse_change();

CREATE TABLE referrals (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          uuid NOT NULL REFERENCES orgs (id),
    case_id         uuid NOT NULL,
    partner_id      uuid NOT NULL,
    partner_kind    text NOT NULL,
    decision        jsonb NOT NULL,               -- cases.consent.Decision, for audit
    override        boolean NOT NULL,
    fields          text[] NOT NULL,              -- the fields the partner received
    sealed_payload  bytea,                        -- what was sent, encrypted with the org key
    status          text NOT NULL DEFAULT 'sent' CHECK (status IN
                    ('sent', 'accepted', 'declined', 'completed', 'failed')),
    outcome_note    text CHECK (length(outcome_note) <= 4000),
    version         integer NOT NULL DEFAULT 1,
    created_by      uuid NOT NULL REFERENCES staff_users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, case_id) REFERENCES cases (org_id, id),
    FOREIGN KEY (org_id, partner_id) REFERENCES partners (org_id, id)
);
CREATE INDEX referrals_case_idx ON referrals (case_id, created_at);

-- Recompute a case's report summary from its member reports. Called after links change and by
-- the trigger below when a member report is amended, so filters and search never go stale.
CREATE FUNCTION case_refresh_summary(target uuid) RETURNS void
LANGUAGE sql AS $$
    UPDATE cases c SET
        categories = coalesce(s.categories, '{}'),
        cells = coalesce(s.cells, '{}'),
        report_count = coalesce(s.report_count, 0),
        occurred_from = s.occurred_from,
        occurred_to = s.occurred_to,
        latitude = s.latitude,
        longitude = s.longitude,
        -- 'simple': narratives come in many languages, so no stemming that favours one.
        search = to_tsvector('simple', coalesce(c.title, '') || ' ' || coalesce(s.narratives, ''))
    FROM (
        SELECT
            (SELECT array_agg(DISTINCT x ORDER BY x) FROM case_reports cr2
               JOIN reports r2 ON r2.id = cr2.report_id, unnest(r2.categories) x
              WHERE cr2.case_id = target AND r2.deleted_at IS NULL) AS categories,
            (SELECT array_agg(DISTINCT x ORDER BY x) FROM case_reports cr3, unnest(cr3.cells) x
              WHERE cr3.case_id = target) AS cells,
            count(r.id) AS report_count,
            min(r.occurred_at) AS occurred_from,
            max(r.occurred_at) AS occurred_to,
            avg(r.latitude) AS latitude,
            avg(r.longitude) AS longitude,
            string_agg(r.content ->> 'narrative', ' ' ORDER BY r.received_at) AS narratives
        FROM case_reports cr
        JOIN reports r ON r.id = cr.report_id AND r.deleted_at IS NULL
        WHERE cr.case_id = target
    ) s
    WHERE c.id = target;
$$;

CREATE FUNCTION reports_refresh_case() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    member_case uuid;
BEGIN
    SELECT case_id INTO member_case FROM case_reports WHERE report_id = NEW.id;
    IF FOUND THEN
        PERFORM case_refresh_summary(member_case);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER reports_refresh_case
    AFTER UPDATE OF content, categories, occurred_at, deleted_at ON reports
    FOR EACH ROW EXECUTE FUNCTION reports_refresh_case();
