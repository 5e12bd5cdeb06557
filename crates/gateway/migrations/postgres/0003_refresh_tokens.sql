-- Refresh tokens: opaque, stored only as SHA-256 hashes. A family is every token descended
-- from one login; presenting a spent token revokes the whole family (OAuth 2.0 Security BCP).
CREATE TABLE refresh_families (
    id             TEXT PRIMARY KEY,
    subject        TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    -- The scopes granted at sign-in when narrower than the account's (RFC 6749 §6), else NULL.
    scope          TEXT,
    revoked_at     TEXT,
    revoked_reason TEXT
);
CREATE INDEX refresh_families_subject ON refresh_families (subject);

CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    spent_at   TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
