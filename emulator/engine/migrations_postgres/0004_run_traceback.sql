-- The user's frames run() raised its error from (migrations/0004).

ALTER TABLE instances ADD COLUMN error_traceback TEXT;
