-- name: insert_org
INSERT INTO orgs (slug, name) VALUES ($1, $2)
RETURNING id, slug, name, created_at;

-- name: get_org
SELECT id, slug, name, created_at FROM orgs WHERE id = $1;

-- name: get_org_by_slug
SELECT id, slug, name, created_at FROM orgs WHERE slug = $1;

-- name: count_orgs
SELECT count(*) FROM orgs;

-- name: insert_user
INSERT INTO staff_users (org_id, email, display_name, role, password_hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, org_id, email, display_name, role, is_active, version, created_at;

-- name: get_user
SELECT id, org_id, email, display_name, role, is_active, version, created_at
FROM staff_users WHERE org_id = $1 AND id = $2;

-- name: list_users
SELECT id, org_id, email, display_name, role, is_active, version, created_at
FROM staff_users
WHERE org_id = $1 AND (created_at, id) > ($2, $3)
ORDER BY created_at, id
LIMIT $4;

-- name: get_login
-- The only query that looks a user up without an org: login knows just the e-mail.
SELECT id, org_id, password_hash, is_active, failed_logins, locked_until
FROM staff_users WHERE email = $1;

-- name: record_login_failure
UPDATE staff_users
SET failed_logins = failed_logins + 1,
    locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + $3::interval ELSE locked_until END
WHERE id = $1;

-- name: record_login_success
UPDATE staff_users SET failed_logins = 0, locked_until = NULL WHERE id = $1;

-- name: update_password_hash
UPDATE staff_users SET password_hash = $2, updated_at = now() WHERE id = $1;

-- name: set_user_active
UPDATE staff_users
SET is_active = $3, version = version + 1, updated_at = now()
WHERE org_id = $1 AND id = $2
RETURNING id, org_id, email, display_name, role, is_active, version, created_at;

-- name: insert_session
INSERT INTO staff_sessions (org_id, user_id, token_hash, expires_at, user_agent)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, org_id, user_id, created_at, expires_at, last_seen_at, revoked_at, user_agent;

-- name: resolve_session
-- A token is good while the session is unrevoked and unexpired and its user is active.
UPDATE staff_sessions s SET last_seen_at = now()
FROM staff_users u
WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
  AND u.id = s.user_id AND u.is_active
RETURNING s.id AS session_id, u.id AS user_id, u.org_id, u.role, u.email;

-- name: revoke_session
UPDATE staff_sessions SET revoked_at = now()
WHERE org_id = $1 AND id = $2 AND revoked_at IS NULL;

-- name: revoke_user_sessions
UPDATE staff_sessions SET revoked_at = now()
WHERE org_id = $1 AND user_id = $2 AND revoked_at IS NULL;

-- name: list_user_sessions
SELECT id, org_id, user_id, created_at, expires_at, last_seen_at, revoked_at, user_agent
FROM staff_sessions
WHERE org_id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()
ORDER BY created_at DESC;

-- name: delete_expired_sessions
DELETE FROM staff_sessions WHERE expires_at < now() - interval '30 days';
