-- Where a rerun (or an imported history) came from (migrations/0009): the original's key and
-- the step it ran again from.

ALTER TABLE instances ADD COLUMN rerun_of TEXT;
ALTER TABLE instances ADD COLUMN rerun_from TEXT;
CREATE INDEX instances_rerun_of ON instances (rerun_of) WHERE rerun_of IS NOT NULL;
