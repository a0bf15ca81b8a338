-- Instances, steps, timers, buffered events and logs of the durable engine.
-- Times are epoch milliseconds of the engine's clock; JSON values are stored as TEXT.

CREATE TABLE instances (
    seq           INTEGER PRIMARY KEY,             -- creation order
    id            TEXT NOT NULL UNIQUE,
    workflow      TEXT NOT NULL,
    status        TEXT NOT NULL,
    params        TEXT NOT NULL,                   -- JSON
    output        TEXT,                            -- JSON, when complete
    error         TEXT,                            -- JSON {"name", "message"}, when errored
    generation    INTEGER NOT NULL DEFAULT 1,      -- bumped by restart(); guards stale writers
    lease_owner   TEXT,
    lease_expiry  INTEGER,                         -- wall-clock ms
    paused_at     INTEGER,
    code_version  TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    started_at    INTEGER,
    ended_at      INTEGER
);
CREATE INDEX instances_active ON instances (status, lease_expiry)
    WHERE status IN ('queued', 'running', 'waitingForPause');
CREATE INDEX instances_workflow ON instances (workflow, seq);

CREATE TABLE steps (
    seq           INTEGER PRIMARY KEY,             -- order in which steps were first reached
    instance_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,                   -- do | sleep | wait
    name          TEXT NOT NULL,
    count         INTEGER NOT NULL,                -- occurrence of (kind, name) in call order
    status        TEXT NOT NULL,                   -- running | backoff | ready | sleeping | waiting | done | failed | cancelled
    attempts      INTEGER NOT NULL DEFAULT 0,
    config        TEXT,                            -- resolved step config, persisted on first attempt
    result        TEXT,                            -- JSON value when done
    error         TEXT,                            -- JSON {"name", "message"} when failed, or last attempt's error
    event_type    TEXT,                            -- wait steps
    duration_ms   INTEGER,                         -- sleep length as first requested
    started_at    INTEGER,
    ended_at      INTEGER,
    UNIQUE (instance_id, kind, name, count)
);

CREATE TABLE timers (
    id            INTEGER PRIMARY KEY,
    instance_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,                   -- sleep | retry | event_timeout
    step_kind     TEXT NOT NULL,
    step_name     TEXT NOT NULL,
    step_count    INTEGER NOT NULL,
    due           INTEGER NOT NULL
);
CREATE INDEX timers_due ON timers (due);
CREATE INDEX timers_instance ON timers (instance_id);

CREATE TABLE events (
    seq           INTEGER PRIMARY KEY,             -- FIFO per (instance, type)
    instance_id   TEXT NOT NULL,
    type          TEXT NOT NULL,
    payload       TEXT NOT NULL,                   -- JSON
    received_at   INTEGER NOT NULL
);
CREATE INDEX events_instance_type ON events (instance_id, type, seq);

CREATE TABLE logs (
    seq           INTEGER PRIMARY KEY,
    instance_id   TEXT NOT NULL,
    step_kind     TEXT,
    step_name     TEXT,
    step_count    INTEGER,
    level         TEXT NOT NULL,
    message       TEXT NOT NULL,
    at            INTEGER NOT NULL
);
CREATE INDEX logs_instance ON logs (instance_id, seq);
