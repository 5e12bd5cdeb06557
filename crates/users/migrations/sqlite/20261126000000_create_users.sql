-- Accounts. Usernames and emails are stored case-folded, so the unique constraints are
-- case-insensitive; the constraints are named after their column so a violation names the field.
-- `is_active` is an INTEGER (0 or 1): sqlx's Any driver cannot decode SQLite's BOOLEAN.
CREATE TABLE users (
    id              TEXT    NOT NULL PRIMARY KEY,  -- UUID, hyphenated
    username        TEXT    NOT NULL,              -- case-folded
    email           TEXT    NOT NULL,              -- lower-cased
    full_name       TEXT,
    role            TEXT    NOT NULL CHECK (role IN ('admin', 'user')),
    scopes          TEXT    NOT NULL,              -- space-separated scope tokens
    hashed_password TEXT    NOT NULL,              -- argon2id PHC string; never leaves the service
    is_active       INTEGER NOT NULL CHECK (is_active IN (0, 1)),
    created_at      TEXT    NOT NULL,              -- RFC 3339 UTC, microseconds: sorts as it reads
    updated_at      TEXT    NOT NULL,
    CONSTRAINT users_username_unique UNIQUE (username),
    CONSTRAINT users_email_unique UNIQUE (email)
);

-- The admin listing pages through users in creation order.
CREATE INDEX users_created_at_id ON users (created_at, id);
