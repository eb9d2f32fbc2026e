-- name: enqueue_job
INSERT INTO jobs (org_id, kind, payload, dedupe_key, run_after, max_attempts)
VALUES ($1, $2, $3::jsonb, $4, coalesce($5, now()), $6)
ON CONFLICT (kind, dedupe_key) WHERE dedupe_key IS NOT NULL AND state IN ('pending', 'running')
DO NOTHING
RETURNING id;

-- name: claim_jobs
-- Pending jobs that are due, and running jobs whose worker died (lease expired), one worker each.
UPDATE jobs j
SET state = 'running', attempts = j.attempts + 1, leased_until = now() + $2::interval
FROM (
    SELECT id FROM jobs
    WHERE (state = 'pending' AND run_after <= now())
       OR (state = 'running' AND leased_until < now())
    ORDER BY run_after, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) due
WHERE j.id = due.id
RETURNING j.id, j.org_id, j.kind, j.payload::text AS payload, j.attempts, j.max_attempts;

-- name: complete_job
UPDATE jobs SET state = 'done', finished_at = now(), leased_until = NULL, last_error = NULL
WHERE id = $1 AND state = 'running';

-- name: retry_job
UPDATE jobs SET state = 'pending', run_after = now() + $3::interval, leased_until = NULL,
    last_error = $2
WHERE id = $1 AND state = 'running';

-- name: bury_job
UPDATE jobs SET state = 'dead', finished_at = now(), leased_until = NULL, last_error = $2
WHERE id = $1 AND state = 'running';

-- name: count_jobs_by_state
SELECT state, count(*) AS n FROM jobs GROUP BY state;
