-- name: insert_entity
INSERT INTO entities (org_id, kind, legal_name, aliases, registration_number, phones, country,
                      address, latitude, longitude, region_cell, parent_id, parent_relation)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
RETURNING id;

-- name: update_entity
UPDATE entities
SET kind = $3, legal_name = $4, aliases = $5, registration_number = $6, phones = $7,
    country = $8, address = $9, latitude = $10, longitude = $11, region_cell = $12,
    parent_id = $13, parent_relation = $14, version = version + 1, updated_at = now()
WHERE id = $2 AND org_id IS NOT DISTINCT FROM $1 AND deleted_at IS NULL AND version = $15
RETURNING version;

-- name: get_entity
SELECT e.id, e.org_id, e.kind, e.legal_name, e.aliases, e.registration_number, e.phones,
       e.country, e.address, e.latitude, e.longitude, e.region_cell, e.parent_id,
       e.parent_relation, e.version, e.created_at, e.updated_at,
       coalesce((SELECT json_agg(json_build_object(
                    'number', l.number, 'issuing_authority', l.issuing_authority,
                    'status', l.status, 'valid_until', l.valid_until)
                    ORDER BY l.issuing_authority, l.number)
                 FROM entity_licences l WHERE l.entity_id = e.id), '[]')::text AS licences
FROM entities e
WHERE e.id = $2 AND (e.org_id = $1 OR e.org_id IS NULL) AND e.deleted_at IS NULL;

-- name: entity_version
SELECT version, org_id FROM entities WHERE id = $1 AND deleted_at IS NULL;

-- name: list_entities
SELECT e.id FROM entities e
WHERE (e.org_id = $1 OR ($2 AND e.org_id IS NULL)) AND e.deleted_at IS NULL
  AND ($3::text IS NULL OR e.kind = $3)
  AND (e.created_at, e.id) > ($4, $5)
ORDER BY e.created_at, e.id LIMIT $6;

-- name: delete_entity_licences
DELETE FROM entity_licences WHERE entity_id = $1;

-- name: insert_entity_licence
INSERT INTO entity_licences (entity_id, org_id, number, issuing_authority, status, valid_until)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: entity_by_licence
SELECT entity_id FROM entity_licences
WHERE org_id IS NOT DISTINCT FROM $1 AND issuing_authority = $2 AND number = $3;

-- name: soft_delete_entity
UPDATE entities SET deleted_at = now(), version = version + 1
WHERE id = $2 AND org_id = $1 AND deleted_at IS NULL
RETURNING version, country, region_cell;

-- name: entity_audiences
SELECT audience FROM sync_changes
WHERE coalesce(org_id, '00000000-0000-0000-0000-000000000000'::uuid)
      = coalesce($1::uuid, '00000000-0000-0000-0000-000000000000'::uuid)
  AND record_kind = 'entity' AND record_id = $2;

-- name: parent_exists
SELECT 1 FROM entities WHERE id = $2 AND (org_id = $1 OR org_id IS NULL) AND deleted_at IS NULL;

-- name: entity_parent
SELECT parent_id FROM entities WHERE id = $1;
