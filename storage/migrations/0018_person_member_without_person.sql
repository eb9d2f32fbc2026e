-- A report that no longer names a worker (its identity removed by an amendment, or redacted by
-- retention) leaves its person: its membership keeps its row, with no person, so that every
-- worker process sees the change in the membership's xid and drops the report from its person
-- index (storage.matching.rematch_report). No person's view or cluster lists it any more.
ALTER TABLE person_members ALTER COLUMN person_id DROP NOT NULL;
