-- An instance made by `instances rerun ID --from STEP` (or imported from a history file) names
-- where it came from: the instance whose history it copied and the step it ran again from. The
-- original is never changed; it finds its reruns by this column (docs/semantics.md §4.10).

ALTER TABLE instances ADD COLUMN rerun_of TEXT;              -- the original's key
ALTER TABLE instances ADD COLUMN rerun_from TEXT;            -- JSON {"kind", "name", "count"}

CREATE INDEX instances_rerun_of ON instances (rerun_of) WHERE rerun_of IS NOT NULL;
