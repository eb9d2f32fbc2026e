-- Sync: monitors and their devices, exactly-once push bookkeeping, reports with versions and
-- conflicts, attachments, and the change feed devices pull from.

CREATE TABLE monitors (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id            uuid NOT NULL REFERENCES orgs (id),
    -- A code name, not the person's legal name: it is shown on screens and in exports.
    display_name      text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    region_cells      text[] NOT NULL DEFAULT '{}',
    region_countries  text[] NOT NULL DEFAULT '{}',
    is_active         boolean NOT NULL DEFAULT true,
    version           integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id)
);

CREATE TABLE enrollment_codes (
    code_hash       bytea PRIMARY KEY,
    org_id          uuid NOT NULL REFERENCES orgs (id),
    monitor_id      uuid NOT NULL,
    created_by      uuid REFERENCES staff_users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    device_id       uuid,
    FOREIGN KEY (org_id, monitor_id) REFERENCES monitors (org_id, id)
);

CREATE TABLE devices (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                uuid NOT NULL REFERENCES orgs (id),
    monitor_id            uuid NOT NULL,
    credential_hash       bytea NOT NULL UNIQUE,
    enrolled_at           timestamptz NOT NULL DEFAULT now(),
    revoked_at            timestamptz,
    revoked_reason        text,
    device_model          text,
    os_version            text,
    app_version           text,
    -- Every seq below next_seq has a stored, final result (the push ledger).
    next_seq              bigint NOT NULL DEFAULT 1,
    clock_samples         double precision[] NOT NULL DEFAULT '{}',
    clock_offset_seconds  double precision,
    last_push_at          timestamptz,
    last_pull_at          timestamptz,
    last_error            text,
    last_error_at         timestamptz,
    outbox_depth          integer,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, monitor_id) REFERENCES monitors (org_id, id)
);
CREATE INDEX devices_monitor_idx ON devices (org_id, monitor_id);

-- Final results of mutations, written once and replayed verbatim on every resend.
CREATE TABLE sync_mutations (
    mutation_id  uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES orgs (id),
    device_id    uuid NOT NULL REFERENCES devices (id),
    seq          bigint NOT NULL,
    body_hash    text NOT NULL,
    result       jsonb NOT NULL,
    received_at  timestamptz NOT NULL,
    UNIQUE (device_id, seq)
);

-- Mutations that arrived before their predecessor; applied when the gap closes.
CREATE TABLE sync_held (
    device_id    uuid NOT NULL REFERENCES devices (id),
    mutation_id  uuid NOT NULL,
    seq          bigint NOT NULL,
    body_hash    text NOT NULL,
    body         bytea NOT NULL,
    body_format  text NOT NULL CHECK (body_format IN ('json', 'msgpack')),
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (device_id, mutation_id),
    UNIQUE (device_id, seq)
);

CREATE TABLE reports (
    id                    uuid PRIMARY KEY,  -- generated on the device
    org_id                uuid NOT NULL REFERENCES orgs (id),
    monitor_id            uuid NOT NULL,
    device_id             uuid NOT NULL,
    version               integer NOT NULL,
    -- The report without its sensitive parts; those are sealed (encrypted) in ``sealed``.
    content               jsonb NOT NULL,
    sealed                bytea,
    occurred_at           timestamptz NOT NULL,
    latitude              double precision NOT NULL,
    longitude             double precision NOT NULL,
    categories            text[] NOT NULL,
    recorded_at           timestamptz NOT NULL,  -- device clock, as the monitor's phone said
    received_at           timestamptz NOT NULL,  -- server clock
    clock_offset_seconds  double precision,
    time_flags            text[] NOT NULL DEFAULT '{}',
    status                text NOT NULL DEFAULT 'received',
    -- Counts what the monitor's devices were told about this report (its feed version).
    status_version        integer NOT NULL DEFAULT 0,
    deleted_at            timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, monitor_id) REFERENCES monitors (org_id, id)
);
CREATE INDEX reports_monitor_idx ON reports (org_id, monitor_id, received_at);
CREATE INDEX reports_occurred_idx ON reports (org_id, occurred_at);

-- Every stored version, so an amendment based on an older version can be merged three-way.
CREATE TABLE report_versions (
    report_id    uuid NOT NULL REFERENCES reports (id),
    version      integer NOT NULL,
    content      jsonb NOT NULL,
    sealed       bytea,
    mutation_id  uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (report_id, version)
);

-- True conflicts (same field, different values): never resolved silently.
CREATE TABLE report_conflicts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          uuid NOT NULL REFERENCES orgs (id),
    report_id       uuid NOT NULL REFERENCES reports (id),
    field           text NOT NULL,
    base_value      jsonb,
    server_value    jsonb,
    incoming_value  jsonb,
    mutation_id     uuid NOT NULL,
    device_id       uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    resolved_by     uuid REFERENCES staff_users (id),
    resolution      text CHECK (resolution IN ('keep_server', 'take_incoming', 'custom')),
    resolved_value  jsonb
);
CREATE INDEX report_conflicts_open_idx ON report_conflicts (org_id, created_at)
    WHERE resolved_at IS NULL;

CREATE TABLE report_attachments (
    report_id   uuid NOT NULL REFERENCES reports (id),
    org_id      uuid NOT NULL REFERENCES orgs (id),
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes  bigint NOT NULL,
    media_type  text NOT NULL,
    sensitive   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (report_id, sha256)
);
CREATE INDEX report_attachments_sha_idx ON report_attachments (org_id, sha256);

-- Blobs an organisation has actually delivered, verified by hash. The bytes are stored once
-- however many organisations hold them, but each organisation must upload them itself: knowing a
-- hash must never be enough to attach (and then download) someone else's evidence.
CREATE TABLE blobs (
    org_id      uuid NOT NULL REFERENCES orgs (id),
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes  bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, sha256)
);

-- Uploads in progress, per organisation (a device can only resume its own org's uploads).
CREATE TABLE blob_uploads (
    org_id      uuid NOT NULL REFERENCES orgs (id),
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    upload_id   text NOT NULL,
    size_bytes  bigint NOT NULL,
    part_size   integer NOT NULL,
    media_type  text NOT NULL,
    device_id   uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, sha256)
);

-- The change feed. One row per (record, audience): rewriting a record gives it a new change_no
-- and the writing transaction's id, which is what the cursor needs to never skip a late commit.
CREATE TABLE sync_changes (
    change_no    bigserial NOT NULL UNIQUE,
    xid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    org_id       uuid REFERENCES orgs (id),  -- NULL: for every organisation (the taxonomy)
    audience     text NOT NULL,              -- 'all', 'org', 'monitor:<uuid>', 'region:<key>'
    record_kind  text NOT NULL,
    record_id    text NOT NULL,
    version      integer NOT NULL,
    body         jsonb NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sync_changes_record_key
    ON sync_changes (coalesce(org_id, '00000000-0000-0000-0000-000000000000'::uuid),
                     audience, record_kind, record_id);
CREATE INDEX sync_changes_feed_idx ON sync_changes (audience, change_no);
-- For the band of late commits a pull must still deliver (xid at or above the cursor's horizon).
CREATE INDEX sync_changes_xid_idx ON sync_changes (xid);

-- Housekeeping state of the feed: the epoch changes on a restore, the prune mark when tombstones
-- are dropped. A cursor older than either must reset.
CREATE TABLE sync_feed_state (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch           integer NOT NULL DEFAULT 1,
    pruned_change   bigint NOT NULL DEFAULT 0,
    pruned_xid      bigint NOT NULL DEFAULT 0,
    taxonomy_hash   text
);
INSERT INTO sync_feed_state DEFAULT VALUES;
