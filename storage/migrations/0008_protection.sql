-- Protection of workers and reporters: staff second factor, admin-issued password resets,
-- retention (redaction of sealed fields after a case closes) and per-organisation privacy
-- settings. See docs/security.md.

-- A staff member's TOTP secret, sealed with the organisation's data key (storage/keyring.py,
-- context 'staff_totp:<user id>'). confirmed_at NULL: enrolled but not yet proven with a code, so
-- login does not ask for one. last_step is the last accepted 30-second step: a code is good once.
CREATE TABLE staff_totp (
    user_id        uuid PRIMARY KEY REFERENCES staff_users (id),
    org_id         uuid NOT NULL REFERENCES orgs (id),
    sealed_secret  bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    confirmed_at   timestamptz,
    last_step      bigint NOT NULL DEFAULT 0
);

-- One-time password reset links issued by an org admin. Only the sha256 of the token is stored;
-- a token works once, before expires_at, and issuing a new one voids the user's older ones.
CREATE TABLE password_resets (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    org_id      uuid NOT NULL REFERENCES orgs (id),
    user_id     uuid NOT NULL REFERENCES staff_users (id),
    created_by  uuid NOT NULL REFERENCES staff_users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX password_resets_user_idx ON password_resets (user_id) WHERE used_at IS NULL;

-- Data minimisation: redact the sealed (sensitive) parts of a case's reports this many days after
-- the case closed, unless the organisation is on legal hold. NULL days: keep indefinitely.
CREATE TABLE retention_settings (
    org_id             uuid PRIMARY KEY REFERENCES orgs (id),
    redact_after_days  integer CHECK (redact_after_days BETWEEN 1 AND 36500),
    legal_hold         boolean NOT NULL DEFAULT false,
    version            integer NOT NULL DEFAULT 1,
    updated_by         uuid REFERENCES staff_users (id),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- How coarse the places analysts see are (H3 resolution of the cell that replaces coordinates).
CREATE TABLE privacy_settings (
    org_id                   uuid PRIMARY KEY REFERENCES orgs (id),
    analyst_cell_resolution  smallint NOT NULL CHECK (analyst_cell_resolution BETWEEN 4 AND 9),
    version                  integer NOT NULL DEFAULT 1,
    updated_by               uuid REFERENCES staff_users (id),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- When a report's sealed parts were erased by the retention job (in every stored version).
ALTER TABLE reports ADD COLUMN redacted_at timestamptz;
