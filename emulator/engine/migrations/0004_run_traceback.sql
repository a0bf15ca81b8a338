-- The user's frames run() raised its error from, kept beside the error: the error itself stays
-- the platform's {"name", "message"} (what status() returns). JSON list, tracebacks.py's shape.

ALTER TABLE instances ADD COLUMN error_traceback TEXT;
