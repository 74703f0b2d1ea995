-- no-transaction
-- A job may also stop because the terminate_on_nan callback saw a NaN or infinite loss.
--
-- SQLite cannot change a CHECK constraint, so `jobs` is rebuilt the way SQLite's ALTER TABLE
-- documentation prescribes: foreign keys off (outside any transaction, hence `no-transaction`), so
-- dropping the old table does not cascade into job_epochs, job_events and checkpoints, which keep
-- referring to `jobs` by name; then the copy, the rename and the index, in one transaction.
PRAGMA foreign_keys = OFF;

BEGIN;

CREATE TABLE jobs_rebuilt (
    seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
    id                    TEXT    NOT NULL UNIQUE,
    model_id              TEXT    NOT NULL,
    dataset_id            TEXT    NOT NULL,
    validation_dataset_id TEXT,
    status                TEXT    NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    request               TEXT    NOT NULL, -- JSON of the request with defaults (and the seed) filled in
    seed                  INTEGER NOT NULL,
    epochs                INTEGER NOT NULL,
    epoch                 INTEGER,          -- last completed 0-based epoch
    batches_done          INTEGER NOT NULL DEFAULT 0,
    batches_total         INTEGER,
    best_epoch            INTEGER,
    stop_reason           TEXT CHECK (stop_reason IN
        ('completed', 'early_stopping', 'terminate_on_nan', 'cancelled', 'error')),
    error                 TEXT,
    saved_model_id        TEXT,
    cancel_requested      INTEGER NOT NULL DEFAULT 0,
    attempts              INTEGER NOT NULL DEFAULT 0, -- times a worker claimed it (> 1 after a resume)
    created_at            TEXT    NOT NULL,
    started_at            TEXT,
    finished_at           TEXT,
    updated_at            TEXT    NOT NULL
);

INSERT INTO jobs_rebuilt (seq, id, model_id, dataset_id, validation_dataset_id, status, request, seed,
                          epochs, epoch, batches_done, batches_total, best_epoch, stop_reason, error,
                          saved_model_id, cancel_requested, attempts, created_at, started_at,
                          finished_at, updated_at)
SELECT seq, id, model_id, dataset_id, validation_dataset_id, status, request, seed, epochs, epoch,
       batches_done, batches_total, best_epoch, stop_reason, error, saved_model_id, cancel_requested,
       attempts, created_at, started_at, finished_at, updated_at
FROM jobs;

-- AUTOINCREMENT never hands out a seq twice, not even one of a deleted job: keep its counter.
CREATE TEMP TABLE jobs_counter AS SELECT seq FROM sqlite_sequence WHERE name = 'jobs';

DROP TABLE jobs;
ALTER TABLE jobs_rebuilt RENAME TO jobs;
CREATE INDEX jobs_status_seq ON jobs (status, seq);

UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM temp.jobs_counter), 0))
WHERE name = 'jobs';
DROP TABLE temp.jobs_counter;

COMMIT;

PRAGMA foreign_keys = ON;
