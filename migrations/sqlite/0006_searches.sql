-- Hyperparameter searches: the search, its trials (each one a job), the decisions taken at ASHA
-- rungs (stored so a resumed search never changes them), and its SSE event log.

CREATE TABLE searches (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    status           TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'cancelled')),
    request          TEXT    NOT NULL, -- JSON of the request with the seeds filled in
    base_job         TEXT    NOT NULL, -- JSON of the base job body with defaults filled in
    base_model_id    TEXT    NOT NULL,
    base_model_name  TEXT    NOT NULL,
    base_model_spec  TEXT    NOT NULL, -- JSON snapshot of the base model's spec
    trial_count      INTEGER NOT NULL, -- trials the search runs in all
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT    NOT NULL,
    finished_at      TEXT,
    updated_at       TEXT    NOT NULL
);

-- Trial `trial` (0-based) of a search: its parameters and the job that trains them.
CREATE TABLE search_trials (
    search_id       TEXT    NOT NULL REFERENCES searches (id) ON DELETE CASCADE,
    trial           INTEGER NOT NULL,
    job_id          TEXT    UNIQUE,   -- NULL when the parameters did not make a valid job (see error)
    params          TEXT    NOT NULL, -- JSON object of the values by path
    objective       REAL,             -- best objective value over its epochs so far
    objective_epoch INTEGER,
    stopped_rung    INTEGER,          -- the ASHA rung where it was stopped
    promoted_rung   INTEGER,          -- the highest ASHA rung it was promoted past
    finished        INTEGER NOT NULL DEFAULT 0, -- its end is recorded (trial_finished sent)
    error           TEXT,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    PRIMARY KEY (search_id, trial)
);

-- One ASHA decision per trial and rung, in the order they were taken.
CREATE TABLE search_decisions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    search_id  TEXT    NOT NULL REFERENCES searches (id) ON DELETE CASCADE,
    trial      INTEGER NOT NULL,
    rung       INTEGER NOT NULL,
    value      REAL,                 -- the objective it was judged on (NULL when not finite)
    decision   TEXT    NOT NULL CHECK (decision IN ('promote', 'stop')),
    created_at TEXT    NOT NULL,
    UNIQUE (search_id, trial, rung)
);

-- The persisted SSE events of a search; `seq` is the SSE id (Last-Event-ID replays after it).
CREATE TABLE search_events (
    search_id  TEXT    NOT NULL REFERENCES searches (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    data       TEXT    NOT NULL, -- JSON
    created_at TEXT    NOT NULL,
    PRIMARY KEY (search_id, seq)
);
