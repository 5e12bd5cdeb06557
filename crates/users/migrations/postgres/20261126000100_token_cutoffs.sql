-- Per-user token cut-offs: when an account is deactivated, deleted, or its role, scopes or
-- password change, every token issued to it before `cutoff_ms` (Unix milliseconds) is void.
-- The gateway polls this table (GET /internal/token-cutoffs) and refuses such tokens.
CREATE TABLE token_cutoffs (
    user_id   TEXT   NOT NULL PRIMARY KEY,
    cutoff_ms BIGINT NOT NULL
);
CREATE INDEX token_cutoffs_cutoff_ms ON token_cutoffs (cutoff_ms);
