-- Retention erases the attachments of redacted reports (storage/retention.py, docs/decisions/
-- 0105-blob-store.md "Erasure"). The redaction transaction marks the report's declared
-- attachments erased and queues one erasure per (organisation, sha256); the bytes are deleted
-- after that commit, under a per-hash advisory lock, once nothing live needs them.

-- When retention erased this declared attachment (its report was redacted). An erased
-- attachment is neither arrived nor awaited: a device may not upload it again for this report.
ALTER TABLE report_attachments ADD COLUMN erased_at timestamptz;

-- Erasures committed but not yet carried out on the blob store. A row is removed in the same
-- transaction that deletes the organisation's copy (or finds a live report still needing it),
-- so a crash at any point leaves the row for the next run of the retention job.
CREATE TABLE blob_erasures (
    org_id        uuid NOT NULL REFERENCES orgs (id),
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, sha256)
);

-- "Does any organisation still hold these bytes?" is asked per hash, across organisations.
CREATE INDEX blobs_sha256_idx ON blobs (sha256);
