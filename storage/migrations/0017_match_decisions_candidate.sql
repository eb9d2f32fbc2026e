-- An amended report is matched again (storage.matching.rematch_report) and must not be
-- suggested again with a report it has a decision with either way round: decisions are looked
-- up by their candidate as well as by their subject.
CREATE INDEX match_decisions_candidate_idx ON match_decisions (org_id, job, candidate_id);
