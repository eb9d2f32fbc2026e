-- Foundation: organisations, staff accounts and sessions, and the background job table.
-- Every tenant-owned table carries org_id; queries always filter on it.

CREATE TABLE orgs (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE staff_users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id         uuid NOT NULL REFERENCES orgs (id),
    email          text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 320),
    display_name   text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    role           text NOT NULL CHECK (role IN ('org_admin', 'case_manager', 'analyst')),
    password_hash  text NOT NULL,
    is_active      boolean NOT NULL DEFAULT true,
    failed_logins  integer NOT NULL DEFAULT 0,
    locked_until   timestamptz,
    version        integer NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- One account per e-mail address across the deployment: login needs no organisation field.
CREATE UNIQUE INDEX staff_users_email_key ON staff_users (email);
CREATE INDEX staff_users_org_idx ON staff_users (org_id, created_at);

CREATE TABLE staff_sessions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id        uuid NOT NULL REFERENCES orgs (id),
    user_id       uuid NOT NULL REFERENCES staff_users (id),
    -- sha256 of the bearer token: a database dump does not yield usable tokens.
    token_hash    bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    user_agent    text
);
CREATE INDEX staff_sessions_user_idx ON staff_sessions (user_id) WHERE revoked_at IS NULL;

-- Background work shared by any number of workers through SELECT ... FOR UPDATE SKIP LOCKED.
CREATE TABLE jobs (
    id            bigserial PRIMARY KEY,
    org_id        uuid REFERENCES orgs (id),
    kind          text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{1,63}$'),
    payload       jsonb NOT NULL DEFAULT '{}'::jsonb,
    dedupe_key    text,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'running', 'done', 'dead')),
    run_after     timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL DEFAULT 8 CHECK (max_attempts >= 1),
    leased_until  timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX jobs_ready_idx ON jobs (run_after) WHERE state = 'pending';
CREATE INDEX jobs_lease_idx ON jobs (leased_until) WHERE state = 'running';
-- The same logical job (e.g. "match report X") is queued at most once while it is outstanding.
CREATE UNIQUE INDEX jobs_dedupe_key ON jobs (kind, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state IN ('pending', 'running');
