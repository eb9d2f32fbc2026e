-- Envelope encryption (storage/keyring.py) and the audit chain (storage/audit.py).

-- name: get_active_data_key
SELECT version, wrapped_key, master_key_id
FROM org_data_keys WHERE org_id = $1 AND retired_at IS NULL;

-- name: get_data_key
SELECT version, wrapped_key, master_key_id
FROM org_data_keys WHERE org_id = $1 AND version = $2;

-- name: insert_first_data_key
-- Two first encryptions racing for one organisation: the second waits for the first to commit,
-- inserts nothing, and then reads the winner's key.
INSERT INTO org_data_keys (org_id, version, wrapped_key, master_key_id)
VALUES ($1, 1, $2, $3)
ON CONFLICT DO NOTHING;

-- name: lock_data_key_rotation
SELECT pg_advisory_xact_lock(hashtextextended('fairwatch.org_data_keys:' || $1::uuid::text, 0));

-- name: next_data_key_version
SELECT coalesce(max(version), 0) + 1 FROM org_data_keys WHERE org_id = $1;

-- name: retire_active_data_key
UPDATE org_data_keys SET retired_at = now() WHERE org_id = $1 AND retired_at IS NULL;

-- name: insert_data_key
INSERT INTO org_data_keys (org_id, version, wrapped_key, master_key_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
RETURNING version;

-- name: lock_data_keys_to_rewrap
-- A fixed order, so two rotations running at once cannot deadlock.
SELECT org_id, version, wrapped_key, master_key_id
FROM org_data_keys
WHERE master_key_id <> $1
ORDER BY org_id, version
LIMIT $2
FOR UPDATE;

-- name: rewrap_data_key
UPDATE org_data_keys SET wrapped_key = $3, master_key_id = $4
WHERE org_id = $1 AND version = $2;

-- name: count_data_keys_by_master
SELECT master_key_id, count(*) AS n FROM org_data_keys GROUP BY master_key_id ORDER BY master_key_id;

-- name: ensure_audit_head
INSERT INTO audit_heads (org_id, seq, hash) VALUES ($1, 0, $2)
ON CONFLICT (org_id) DO NOTHING;

-- name: lock_audit_head
-- Serialises appenders per organisation until their transaction ends. The timestamp is taken
-- after the lock, from the database clock, so times follow seq order; the detail comes back in
-- PostgreSQL's own jsonb text form, which is what the hash covers and what verification reads.
SELECT seq, hash, clock_timestamp() AS at, $2::jsonb::text AS detail
FROM audit_heads WHERE org_id = $1
FOR UPDATE;

-- name: insert_audit_entry
INSERT INTO audit_log (
    org_id, seq, at, actor_kind, actor_id, action, object_kind, object_id, detail, prev_hash, hash
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11);

-- name: advance_audit_head
UPDATE audit_heads SET seq = $2, hash = $3 WHERE org_id = $1;

-- name: get_audit_head
SELECT seq, hash FROM audit_heads WHERE org_id = $1;

-- name: list_audit_heads
SELECT org_id, seq, hash FROM audit_heads ORDER BY org_id;

-- name: list_audit_org_ids
SELECT id FROM orgs ORDER BY id;

-- name: stream_audit_chain
SELECT seq, at, actor_kind, actor_id, action, object_kind, object_id, detail::text AS detail,
       prev_hash, hash
FROM audit_log WHERE org_id = $1
ORDER BY seq;

-- name: list_audit_entries
SELECT org_id, seq, at, actor_kind, actor_id, action, object_kind, object_id,
       detail::text AS detail, prev_hash, hash
FROM audit_log
WHERE org_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3;
