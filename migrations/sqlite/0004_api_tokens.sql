-- API tokens. Only the SHA-256 of a token is stored; the token itself is shown once, at creation.
-- Revoked tokens keep their row (with `revoked_at` set) so the list shows them and, once any token
-- was ever created, authentication stays enforced.
CREATE TABLE api_tokens (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    scopes      TEXT    NOT NULL, -- comma-separated subset of read, train, predict, admin
    token_hash  TEXT    NOT NULL UNIQUE, -- lowercase hex SHA-256 of the whole token
    prefix      TEXT    NOT NULL, -- the first characters of the token, to recognise it in lists
    created_at  TEXT    NOT NULL,
    revoked_at  TEXT
);
