-- An organisation's own matching thresholds for one job, set by an org admin. They are applied
-- over the stored (or starting) model whenever matching loads it, so a refit, which still fits
-- m and u and chooses its own thresholds, never overrides them (docs/decisions/0114).
-- merge NULL: the model's own merge threshold.
CREATE TABLE match_settings (
    org_id      uuid NOT NULL REFERENCES orgs (id),
    job         text NOT NULL CHECK (job IN ('incident', 'entity', 'person')),
    link        double precision NOT NULL,
    review      double precision NOT NULL,
    merge       double precision CHECK (merge BETWEEN 0 AND 1),
    updated_by  uuid NOT NULL REFERENCES staff_users (id),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, job),
    CHECK (0 < review AND review <= link AND link < 1)
);
