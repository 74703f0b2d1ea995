-- Training jobs, their per-epoch metrics, the SSE event log, checkpoints, and saved (trained) models.

-- One row per training job. `seq` orders the queue (FIFO); a job put back in the queue after a
-- restart keeps its seq, so it is claimed before jobs submitted later.
CREATE TABLE jobs (
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
    stop_reason           TEXT CHECK (stop_reason IN ('completed', 'early_stopping', 'cancelled', 'error')),
    error                 TEXT,
    saved_model_id        TEXT,
    cancel_requested      INTEGER NOT NULL DEFAULT 0,
    attempts              INTEGER NOT NULL DEFAULT 0, -- times a worker claimed it (> 1 after a resume)
    created_at            TEXT    NOT NULL,
    started_at            TEXT,
    finished_at           TEXT,
    updated_at            TEXT    NOT NULL
);
CREATE INDEX jobs_status_seq ON jobs (status, seq);

-- Metrics of each completed epoch, written in the same transaction as its event and checkpoint.
CREATE TABLE job_epochs (
    job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    epoch       INTEGER NOT NULL,
    metrics     TEXT    NOT NULL, -- JSON {"loss": ..., "accuracy": ..., "val_loss": ..., ...}
    duration_ms REAL    NOT NULL,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (job_id, epoch)
);

-- The persisted SSE events of a job (status, epoch, checkpoint, done); `seq` is the SSE `id`, so a
-- client reconnecting with Last-Event-ID is replayed exactly what it missed.
CREATE TABLE job_events (
    job_id     TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    data       TEXT    NOT NULL, -- JSON
    created_at TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Full training states (nn::Trainer::save_state). Retention keeps the latest and the best.
CREATE TABLE checkpoints (
    job_id     TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    state      BLOB    NOT NULL,
    metrics    TEXT    NOT NULL, -- JSON of the epoch's metrics
    is_best    INTEGER NOT NULL DEFAULT 0,
    created_at TEXT    NOT NULL,
    PRIMARY KEY (job_id, epoch)
);

-- Trained weights: from a finished job, a stored checkpoint, an upload or an import.
CREATE TABLE saved_models (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    model_id   TEXT NOT NULL,          -- the architecture (models.id) it instantiates
    job_id     TEXT,                   -- the job it came from; NULL for uploads and imports
    epoch      INTEGER,                -- 0-based epoch of the weights, when from a job
    source     TEXT NOT NULL CHECK (source IN ('job', 'checkpoint', 'weights_upload', 'import')),
    metrics    TEXT NOT NULL DEFAULT '{}', -- JSON object of that epoch's metrics
    spec       TEXT NOT NULL,          -- JSON snapshot of the model spec as trained
    weights    BLOB NOT NULL,          -- safetensors bytes of nn::Model::tensors() (fitted PCA included)
    created_at TEXT NOT NULL
);
