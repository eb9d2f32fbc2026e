-- Matching: incidents (reports of one event), persons (one worker across reports), links from
-- reports to registry entities, and every matching decision with its explanation, reversible.

CREATE TABLE incidents (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id       uuid NOT NULL REFERENCES orgs (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id)
);

-- One incident per report; moving a report between incidents is a recorded decision.
CREATE TABLE incident_members (
    report_id    uuid PRIMARY KEY REFERENCES reports (id),
    org_id       uuid NOT NULL REFERENCES orgs (id),
    incident_id  uuid NOT NULL,
    decision_id  uuid,
    linked_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, incident_id) REFERENCES incidents (org_id, id)
);
CREATE INDEX incident_members_incident_idx ON incident_members (incident_id);

CREATE TABLE persons (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id       uuid NOT NULL REFERENCES orgs (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id)
);

CREATE TABLE person_members (
    report_id    uuid PRIMARY KEY REFERENCES reports (id),
    org_id       uuid NOT NULL REFERENCES orgs (id),
    person_id    uuid NOT NULL,
    decision_id  uuid,
    linked_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, person_id) REFERENCES persons (org_id, id)
);
CREATE INDEX person_members_person_idx ON person_members (person_id);

-- The employer or recruiter a report names, resolved to the registry.
CREATE TABLE entity_links (
    report_id    uuid NOT NULL REFERENCES reports (id),
    role         text NOT NULL CHECK (role IN ('employer', 'recruiter')),
    org_id       uuid NOT NULL REFERENCES orgs (id),
    entity_id    uuid NOT NULL REFERENCES entities (id),
    decision_id  uuid,
    linked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (report_id, role)
);
CREATE INDEX entity_links_entity_idx ON entity_links (org_id, entity_id);

-- Every decision, automatic or human, with the score breakdown that justified it. Human
-- decisions double as labels for recalibration.
CREATE TABLE match_decisions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id        uuid NOT NULL REFERENCES orgs (id),
    job           text NOT NULL CHECK (job IN ('incident', 'entity', 'person')),
    subject_id    text NOT NULL,   -- the report (or report:role) being matched
    candidate_id  text NOT NULL,   -- the report, entity or person it was compared with
    probability   double precision NOT NULL,
    total_weight  double precision NOT NULL,
    explanation   jsonb NOT NULL,
    suggestion    text NOT NULL CHECK (suggestion IN ('link', 'review', 'no_link')),
    status        text NOT NULL
                  CHECK (status IN ('auto_linked', 'pending_review', 'accepted', 'rejected', 'undone')),
    decided_by    text NOT NULL,   -- 'matcher' or 'staff:<uuid>'
    decided_at    timestamptz NOT NULL DEFAULT now(),
    -- What the link replaced, so that undoing it restores the previous state exactly.
    previous      jsonb,
    model_version text NOT NULL,
    UNIQUE (org_id, job, subject_id, candidate_id)
);
CREATE INDEX match_decisions_queue_idx ON match_decisions (org_id, job, decided_at)
    WHERE status = 'pending_review';

-- Fitted models per organisation and job (EM on the org's own pairs, or refitted from the case
-- team's decisions); without one the engine's starting model is used.
CREATE TABLE match_models (
    org_id     uuid NOT NULL REFERENCES orgs (id),
    job        text NOT NULL CHECK (job IN ('incident', 'entity', 'person')),
    model      jsonb NOT NULL,
    fitted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, job)
);
