-- Datasets: metadata only; the decoded arrays live in files under <db stem>-data/datasets/<id>/.
CREATE TABLE datasets (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('classification', 'regression')),
    source        TEXT    NOT NULL,
    n_samples     INTEGER NOT NULL,
    input_shape   TEXT    NOT NULL, -- JSON array of dimensions of one sample
    n_features    INTEGER NOT NULL,
    n_classes     INTEGER,          -- classification only
    n_targets     INTEGER,          -- regression only
    class_counts  TEXT,             -- JSON object label -> count, classification only
    feature_min   REAL    NOT NULL,
    feature_max   REAL    NOT NULL,
    size_bytes    INTEGER NOT NULL,
    parent_id     TEXT,             -- the dataset a derived (PCA) dataset was computed from
    derivation    TEXT,             -- JSON describing the derivation (e.g. PCA ratios)
    image_shape   TEXT,             -- JSON shape sample PNGs are drawn in, when 2-D
    created_at    TEXT    NOT NULL
);

-- Model architectures. `locked` is set once a training job has used the model, after which
-- layers can no longer be appended (its checkpoints and saved weights depend on them).
CREATE TABLE models (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    spec          TEXT    NOT NULL, -- JSON {"input_shape": [...], "layers": [...]}
    locked        INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
);
