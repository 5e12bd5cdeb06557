-- Revocations in force: the source of truth behind every replica's in-memory mirror (Redis is
-- only the fast channel). A replica loads the live rows at start and after Redis comes back, so
-- a Redis restarted without persistence forgets nothing.
--   kind 'deny'    name = token id (jti),   value = until (Unix s)
--   kind 'session' name = session id (sid), value = until (Unix s)
--   kind 'cutoff'  name = subject,          value = cut-off (Unix ms)
-- Rows past expires_at (Unix s) are pruned.
CREATE TABLE revocations (
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    recorded_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE INDEX revocations_expires_at ON revocations (expires_at);
CREATE INDEX revocations_recorded_ms ON revocations (recorded_ms);
