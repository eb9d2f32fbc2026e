-- Which transaction last wrote each incident and person membership, so that a worker process can
-- bring its in-memory matching index up to date with every report matched since it last looked,
-- including those whose transaction committed after a later one (storage.matching, decision
-- 0114 "Indexes that never miss a matched report"). A watermark on reports.received_at could
-- not: a push's reports carry the time its request arrived, a held mutation's the time it first
-- arrived (hours or days before it is released), and commits come in any order.
ALTER TABLE incident_members ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE person_members ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX incident_members_xid_idx ON incident_members (org_id, xid);
CREATE INDEX person_members_xid_idx ON person_members (org_id, xid);
