-- Security: per-organisation data keys for envelope encryption (storage/keyring.py) and the
-- append-only, hash-chained audit log (storage/audit.py). See docs/decisions/0106 and 0107.

-- One AES-256 data key per organisation and version. Only the wrapped form is stored: the data
-- key encrypted with AES-256-GCM under the master key named by master_key_id (which never
-- reaches the database), so a dump of this table alone reveals nothing.
CREATE TABLE org_data_keys (
    org_id         uuid NOT NULL REFERENCES orgs (id),
    version        integer NOT NULL CHECK (version >= 1),
    wrapped_key    bytea NOT NULL CHECK (length(wrapped_key) >= 60),
    master_key_id  text NOT NULL CHECK (master_key_id ~ '^[0-9a-f]{16}$'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    retired_at     timestamptz,
    PRIMARY KEY (org_id, version)
);
-- New writes use the one unretired version; older versions stay for decryption.
CREATE UNIQUE INDEX org_data_keys_active_key ON org_data_keys (org_id) WHERE retired_at IS NULL;


-- The audit chain: entry n of an organisation carries the hash of entry n-1 (genesis: 32 zero
-- bytes), and audit_heads holds the last (seq, hash) so that a truncated tail is detectable.
CREATE TABLE audit_heads (
    org_id  uuid PRIMARY KEY REFERENCES orgs (id),
    seq     bigint NOT NULL CHECK (seq >= 0),
    hash    bytea NOT NULL CHECK (length(hash) = 32)
);

CREATE TABLE audit_log (
    org_id       uuid NOT NULL REFERENCES orgs (id),
    seq          bigint NOT NULL CHECK (seq >= 1),
    at           timestamptz NOT NULL,
    actor_kind   text NOT NULL CHECK (actor_kind IN ('staff', 'device', 'system')),
    actor_id     text NOT NULL CHECK (length(actor_id) BETWEEN 1 AND 200),
    action       text NOT NULL
                 CHECK (length(action) <= 100 AND action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    object_kind  text CHECK (length(object_kind) BETWEEN 1 AND 100),
    object_id    text CHECK (length(object_id) BETWEEN 1 AND 200),
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash    bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash         bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (org_id, seq)
);

-- The database refuses to rewrite history. The table owner or a superuser can still disable
-- these triggers; that is what verify_chain (and heads anchored elsewhere) is for.
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING HINT = 'audit entries are never changed or removed';
END
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- An entry must extend the organisation's head, which the appender holds locked.
CREATE FUNCTION audit_log_extends_head() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    head_seq  bigint;
    head_hash bytea;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM audit_heads WHERE org_id = NEW.org_id;
    IF NOT FOUND OR NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'audit entry % of org % does not extend the chain head', NEW.seq, NEW.org_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_extends_head
    BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_extends_head();

-- A head starts at genesis and only ever advances by one, onto the entry just appended.
CREATE FUNCTION audit_heads_advance_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit_heads rows cannot be deleted';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.seq <> 0 OR NEW.hash <> '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea THEN
            RAISE EXCEPTION 'an audit head starts at seq 0 with the genesis hash';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.org_id <> OLD.org_id OR NEW.seq <> OLD.seq + 1 OR NOT EXISTS (
        SELECT 1 FROM audit_log WHERE org_id = NEW.org_id AND seq = NEW.seq AND hash = NEW.hash
    ) THEN
        RAISE EXCEPTION 'audit head of org % may only advance onto the entry just appended', OLD.org_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_heads_advance_only
    BEFORE INSERT OR UPDATE OR DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_heads_advance_only();
