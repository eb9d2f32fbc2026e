-- The push write path (docs/decisions/0109-sync-benchmarks.md, "Push"): every index on `reports`
-- is paid once per pushed report.
--
-- UNIQUE (org_id, id) duplicated the primary key: `id` alone is unique, no foreign key names the
-- pair, and lookups by (org_id, id) use the primary key.
ALTER TABLE reports DROP CONSTRAINT reports_org_id_id_key;

-- From now on `report_versions` holds the versions an amendment replaced; the current version
-- lives in `reports` only (storage/sql/sync.sql, archive_report_version). Archived rows leave
-- mutation_id NULL: which mutation made which version is in the push ledger (sync_mutations).
COMMENT ON TABLE report_versions IS
    'Earlier versions of a report, archived when an amendment replaces them; the current version is the reports row.';
