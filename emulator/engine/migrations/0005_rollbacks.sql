-- Rollbacks (docs/semantics.md, "Rollbacks"). A do step that registered a compensation handler
-- keeps its resolved rollback config (JSON, like `config`, persisted on its first attempt): a
-- non-NULL value is what makes the step take part in a rollback phase. A handler's own run is a
-- step of kind 'rollback' under the same name and count as the step it undoes.
ALTER TABLE steps ADD COLUMN rollback TEXT;

-- The instance's rollback phase, once one has begun: JSON {"trigger": {"name", "message"} or null
-- (terminate), "outcome": null while it runs, then "complete" or "failed", "error": the failed
-- handler's {"name", "message"} or null}. NULL when no phase ever began.
ALTER TABLE instances ADD COLUMN rollback TEXT;
