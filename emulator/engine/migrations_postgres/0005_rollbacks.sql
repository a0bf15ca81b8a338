-- Rollbacks (migrations/0005): a do step's resolved rollback config, and the instance's
-- rollback phase once one has begun (both JSON text, NULL when absent).

ALTER TABLE steps ADD COLUMN rollback TEXT;
ALTER TABLE instances ADD COLUMN rollback TEXT;
