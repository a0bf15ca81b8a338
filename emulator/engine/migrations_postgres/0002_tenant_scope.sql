-- The tenant scope of an instance created through a wrapped binding (migrations/0002). No
-- PostgreSQL database predates this column, so there is nothing to backfill.

ALTER TABLE instances ADD COLUMN scope TEXT;
CREATE INDEX instances_scope ON instances (scope, seq) WHERE scope IS NOT NULL;
