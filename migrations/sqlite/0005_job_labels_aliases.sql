-- no-transaction
-- Runs people can find and clean up: a job's name, string key-value tags and notes; aliases
-- naming saved models, with their history; and incremental vacuum, so deleting jobs shrinks the file.
BEGIN;

ALTER TABLE jobs ADD COLUMN name  TEXT;
ALTER TABLE jobs ADD COLUMN tags  TEXT NOT NULL DEFAULT '{}'; -- JSON object of string -> string
ALTER TABLE jobs ADD COLUMN notes TEXT;
CREATE INDEX jobs_model_seq ON jobs (model_id, seq);
CREATE INDEX jobs_dataset_seq ON jobs (dataset_id, seq);

-- A stable name (`production`) for a saved model; moved by replacing saved_model_id.
CREATE TABLE aliases (
    name           TEXT NOT NULL PRIMARY KEY,
    saved_model_id TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

-- Every move of an alias, oldest first; saved_model_id is NULL when the alias was deleted.
CREATE TABLE alias_history (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL,
    saved_model_id TEXT,
    created_at     TEXT NOT NULL
);
CREATE INDEX alias_history_name ON alias_history (name, seq);

COMMIT;

-- Pages freed by deletions are returned to the file system by `PRAGMA incremental_vacuum`; an
-- existing database only switches modes through a VACUUM.
PRAGMA auto_vacuum = INCREMENTAL;
VACUUM;
