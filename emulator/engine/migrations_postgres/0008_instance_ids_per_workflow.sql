-- Instance ids are unique per workflow (migrations/0008): `binding_id` is the id the workflow's
-- binding created the instance with; `id` stays the engine's key of the row.

ALTER TABLE instances ADD COLUMN binding_id TEXT;
UPDATE instances SET binding_id = id;
CREATE UNIQUE INDEX instances_workflow_binding_id ON instances (workflow, binding_id);
CREATE INDEX instances_binding_id ON instances (binding_id);
