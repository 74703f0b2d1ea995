-- Webhooks: subscriptions to job status changes, and the outbox of their deliveries. A delivery row
-- is written in the same transaction as the status event it reports, so none is lost to a crash or
-- a restart; a background task sends them, signed, and retries with backoff.
CREATE TABLE webhooks (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL, -- JSON array: job.queued, job.running, job.succeeded, job.failed, job.cancelled, job.*
    secret     TEXT NOT NULL, -- HMAC-SHA256 key of the signatures
    created_at TEXT NOT NULL
);

CREATE TABLE webhook_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    webhook_id      TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event           TEXT    NOT NULL,          -- job.succeeded, ...
    payload         TEXT    NOT NULL,          -- the JSON body sent
    status          TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0, -- Unix milliseconds of the next try
    last_status     INTEGER,                   -- HTTP status of the last answer
    last_error      TEXT,                      -- why the last try failed without an answer
    created_at      TEXT    NOT NULL,
    delivered_at    TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_ms);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, seq);
