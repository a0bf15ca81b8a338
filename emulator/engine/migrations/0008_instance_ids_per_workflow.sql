-- Instance ids are unique per workflow, as on the platform: two workflows may each have an
-- instance "order-1". `id` stays the engine's key of the row (unique; what steps, timers, events,
-- logs, attempts and leases refer to); `binding_id` is the id the workflow's binding created it
-- with. The first instance of an id keeps the id as its key; another workflow's instance of the
-- same id is keyed "<id>.<workflow>" (ids have no dots, so no binding id can take that key).

ALTER TABLE instances ADD COLUMN binding_id TEXT;

-- Every instance created before this migration was created under its key.
UPDATE instances SET binding_id = id;

CREATE UNIQUE INDEX instances_workflow_binding_id ON instances (workflow, binding_id);
CREATE INDEX instances_binding_id ON instances (binding_id);
