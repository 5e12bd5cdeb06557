-- Machine-to-machine clients (OAuth 2.0 client credentials). The secret is 256 random bits,
-- so a SHA-256 of it is as strong as a slow hash, and keeps the token endpoint cheap.
CREATE TABLE clients (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
