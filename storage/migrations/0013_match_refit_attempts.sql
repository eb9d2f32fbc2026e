-- The last refit of each organisation's matching model per job, fitted or not (too little data
-- yet), so the nightly refit (server/matching_jobs.py) only tries again once something changed.
CREATE TABLE match_refit_attempts (
    org_id        uuid NOT NULL REFERENCES orgs (id),
    job           text NOT NULL CHECK (job IN ('incident', 'entity', 'person')),
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    outcome       text NOT NULL,
    PRIMARY KEY (org_id, job)
);
