-- The transaction that wrote each alert event, so the live stream can send the events of a
-- transaction that committed after a later-numbered one (storage/alert_stream.py).
ALTER TABLE alert_versions ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX alert_versions_xid_idx ON alert_versions (org_id, xid);
