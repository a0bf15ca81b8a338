-- The tenant scope of an instance created through a wrapped binding, kept beside its id: the
-- engine keys such an instance "<scope>-<tenant's id>", and the tenant's id may use the
-- platform's whole 100 characters. NULL for the dispatcher's own instances.

ALTER TABLE instances ADD COLUMN scope TEXT;

-- Instances created before this migration: a wrapped binding's id starts with its 12-hex-digit
-- scope and a dash, and its params carry the dispatcher metadata.
UPDATE instances SET scope = substr(id, 1, 12)
WHERE json_valid(params) AND json_type(params, '$.__dispatcherMetadata') IS NOT NULL
  AND substr(id, 13, 1) = '-' AND lower(substr(id, 1, 12)) = substr(id, 1, 12)
  AND substr(id, 1, 12) NOT GLOB '*[^0-9a-f]*';

CREATE INDEX instances_scope ON instances (scope, seq) WHERE scope IS NOT NULL;
