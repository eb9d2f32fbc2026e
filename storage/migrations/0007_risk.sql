-- Risk detection: per-organisation scan settings and schedules, the record of every scan run,
-- alerts with their version history (lineage), analysts' subscriptions and webhook deliveries.

CREATE TABLE risk_org_settings (
    org_id                     uuid PRIMARY KEY REFERENCES orgs (id),
    -- An alert is raised only for clusters at least this rare (1/p, in days of daily runs).
    alert_min_recurrence_days  double precision NOT NULL DEFAULT 100
                               CHECK (alert_min_recurrence_days >= 1),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

-- Organisations without any row here get the default nightly scan (server/scheduler.py).
CREATE TABLE risk_schedules (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES orgs (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    cron        text NOT NULL CHECK (length(cron) BETWEEN 9 AND 100),
    enabled     boolean NOT NULL DEFAULT true,
    params      jsonb NOT NULL DEFAULT '{}'::jsonb,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE TABLE risk_runs (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                  uuid NOT NULL REFERENCES orgs (id),
    trigger                 text NOT NULL CHECK (trigger IN ('schedule', 'api')),
    schedule_key            text,
    requested_by            uuid REFERENCES staff_users (id),
    state                   text NOT NULL DEFAULT 'queued'
                            CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    params                  jsonb NOT NULL,
    raise_alerts            boolean NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    started_at              timestamptz,
    finished_at             timestamptz,
    -- What data the run saw: the newest report it counted and the feed position at load time.
    watermark_received_at   timestamptz,
    watermark_change_no     bigint,
    report_count            integer,
    results                 jsonb,
    alerts_raised           integer NOT NULL DEFAULT 0,
    alerts_updated          integer NOT NULL DEFAULT 0,
    code_version            text,
    error                   text,
    UNIQUE (org_id, id)
);
CREATE INDEX risk_runs_org_idx ON risk_runs (org_id, created_at DESC, id DESC);

CREATE TABLE alerts (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                    uuid NOT NULL REFERENCES orgs (id),
    kind                      text NOT NULL CHECK (kind IN ('space_time', 'entity_surge')),
    -- Which reports were scanned: 'all', 'group:<priority group>' or 'categories:<codes>'.
    scope                     text NOT NULL,
    categories                text[] NOT NULL DEFAULT '{}',
    status                    text NOT NULL DEFAULT 'new'
                              CHECK (status IN ('new', 'acknowledged', 'escalated', 'dismissed')),
    version                   integer NOT NULL DEFAULT 1,
    -- Where: H3 cells (never coordinates), or which entity and its path from the root.
    cells                     text[] NOT NULL DEFAULT '{}',
    centre_cell               text,
    radius_km                 double precision,
    countries                 text[] NOT NULL DEFAULT '{}',
    entity_role               text CHECK (entity_role IN ('employer', 'recruiter')),
    entity_id                 uuid,
    entity_path               uuid[] NOT NULL DEFAULT '{}',
    -- The entity and its path from the root with names and kinds, as analysts see it.
    entity                    jsonb,
    window_start              date NOT NULL,
    window_end                date NOT NULL,
    observed                  integer NOT NULL,
    expected                  double precision NOT NULL,
    ratio                     double precision NOT NULL,
    llr                       double precision NOT NULL,
    p_value                   double precision NOT NULL,
    replicas                  integer NOT NULL,
    recurrence_interval_days  double precision NOT NULL,
    member_report_ids         uuid[] NOT NULL,
    linked_entities           jsonb NOT NULL DEFAULT '[]'::jsonb,
    method                    text NOT NULL,
    params                    jsonb NOT NULL,
    seed                      bigint NOT NULL,
    code_version              text NOT NULL,
    quality                   jsonb NOT NULL,
    first_run_id              uuid NOT NULL,
    last_run_id               uuid NOT NULL,
    -- No foreign key yet: the cases table belongs to another migration.
    case_id                   uuid,
    dismiss_reason            text,
    verdict                   text CHECK (verdict IN ('true_alarm', 'false_alarm')),
    verdict_note              text,
    verdict_by                uuid REFERENCES staff_users (id),
    verdict_at                timestamptz,
    status_changed_by         uuid REFERENCES staff_users (id),
    status_changed_at         timestamptz,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    CHECK ((status = 'dismissed') = (dismiss_reason IS NOT NULL))
);
CREATE INDEX alerts_org_idx ON alerts (org_id, created_at DESC, id DESC);
CREATE INDEX alerts_open_idx ON alerts (org_id, kind, scope) WHERE status <> 'dismissed';

-- Every state of every alert; seq orders the org's events for the live stream (Last-Event-ID).
CREATE TABLE alert_versions (
    seq         bigserial PRIMARY KEY,
    alert_id    uuid NOT NULL REFERENCES alerts (id),
    org_id      uuid NOT NULL REFERENCES orgs (id),
    version     integer NOT NULL,
    event       text NOT NULL,
    run_id      uuid,
    actor_id    uuid,
    snapshot    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (alert_id, version)
);
CREATE INDEX alert_versions_org_idx ON alert_versions (org_id, seq);

CREATE TABLE alert_subscriptions (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                 uuid NOT NULL REFERENCES orgs (id),
    user_id                uuid NOT NULL REFERENCES staff_users (id),
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    cells                  text[] NOT NULL DEFAULT '{}',
    countries              text[] NOT NULL DEFAULT '{}',
    categories             text[] NOT NULL DEFAULT '{}',
    min_recurrence_days    double precision NOT NULL DEFAULT 0,
    webhook_url            text,
    -- The signing secret, encrypted under the organisation's data key.
    webhook_secret_sealed  bytea,
    enabled                boolean NOT NULL DEFAULT true,
    created_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    CHECK ((webhook_url IS NULL) = (webhook_secret_sealed IS NULL))
);
CREATE INDEX alert_subscriptions_org_idx ON alert_subscriptions (org_id, user_id);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id           uuid NOT NULL REFERENCES orgs (id),
    subscription_id  uuid NOT NULL REFERENCES alert_subscriptions (id) ON DELETE CASCADE,
    alert_id         uuid NOT NULL REFERENCES alerts (id),
    alert_version    integer NOT NULL,
    event            text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    last_status      integer,
    last_error       text,
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (subscription_id, alert_id, alert_version)
);
CREATE INDEX webhook_deliveries_org_idx ON webhook_deliveries (org_id, created_at DESC);
