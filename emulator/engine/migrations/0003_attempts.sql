-- Every failed attempt of a step, kept: a step's row holds only its latest error, so a step done
-- on attempt 2 would hide why attempt 1 failed. Written in the transaction that records the
-- attempt's outcome on the step's row (engine/lifetime.py settle).

CREATE TABLE attempts (
    seq           INTEGER PRIMARY KEY,
    instance_id   TEXT NOT NULL,
    step_kind     TEXT NOT NULL,
    step_name     TEXT NOT NULL,
    step_count    INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    error         TEXT NOT NULL,                   -- JSON {"name", "message", "traceback"?}
    at            INTEGER NOT NULL,                -- when the attempt failed
    UNIQUE (instance_id, step_kind, step_name, step_count, attempt)
);
CREATE INDEX attempts_instance ON attempts (instance_id, seq);
