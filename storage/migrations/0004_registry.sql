-- Registry: employers, recruitment agencies and sub-agents, with licences and parent links.
-- org_id NULL marks the shared registry (public licence lists) that every organisation reads.

CREATE TABLE entities (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id               uuid REFERENCES orgs (id),
    kind                 text NOT NULL
                         CHECK (kind IN ('employer', 'recruitment_agency', 'sub_agent')),
    legal_name           text NOT NULL CHECK (length(legal_name) BETWEEN 1 AND 300),
    aliases              text[] NOT NULL DEFAULT '{}',
    registration_number  text,
    phones               text[] NOT NULL DEFAULT '{}',
    country              text CHECK (country ~ '^[A-Z]{2}$'),
    address              text,
    latitude             double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude            double precision CHECK (longitude BETWEEN -180 AND 180),
    region_cell          text,  -- H3 cell at cases.registry.REGION_RESOLUTION
    parent_id            uuid REFERENCES entities (id),
    parent_relation      text CHECK (parent_relation IN ('branch_of', 'supplier_of', 'subsidiary_of')),
    version              integer NOT NULL DEFAULT 1,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    deleted_at           timestamptz,
    CHECK (parent_id IS NULL OR parent_id <> id),
    CHECK ((parent_id IS NULL) = (parent_relation IS NULL))
);
CREATE INDEX entities_org_idx ON entities (org_id, created_at, id);
CREATE INDEX entities_parent_idx ON entities (parent_id);
CREATE INDEX entities_phones_idx ON entities USING gin (phones);

CREATE TABLE entity_licences (
    entity_id          uuid NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    org_id             uuid REFERENCES orgs (id),
    number             text NOT NULL CHECK (number ~ '^[A-Z0-9]{1,100}$'),
    issuing_authority  text NOT NULL,
    status             text NOT NULL CHECK (status IN ('active', 'suspended', 'revoked', 'expired')),
    valid_until        date,
    PRIMARY KEY (entity_id, issuing_authority, number)
);
-- A licence number identifies one entity per authority within a registry: imports are idempotent.
CREATE UNIQUE INDEX entity_licences_key ON entity_licences
    (coalesce(org_id, '00000000-0000-0000-0000-000000000000'::uuid), issuing_authority, number);
CREATE INDEX entity_licences_number_idx ON entity_licences (number);
