-- Orders, their items, and the idempotency keys of the requests that created them.
-- Portable through sqlx's Any driver: TEXT ids (hyphenated UUIDs) and timestamps (RFC 3339 UTC
-- with microseconds, fixed width, so text order is time order), amounts and quantities as
-- 64-bit integers (INTEGER here, BIGINT on PostgreSQL), and no BOOLEAN (Any cannot decode
-- SQLite's).
CREATE TABLE orders (
    id          TEXT    NOT NULL PRIMARY KEY,  -- UUID v7: ids sort in creation order
    user_id     TEXT    NOT NULL,              -- the creator, from the gateway's identity token
    status      TEXT    NOT NULL CHECK (status IN ('pending', 'paid', 'cancelled')),
    total_cents INTEGER NOT NULL CHECK (total_cents >= 0),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);

-- "Newest first", for one user and for everyone (admins), without a sort.
CREATE INDEX orders_user_newest ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_newest ON orders (created_at DESC, id DESC);

-- The lines of an order, in the order they were sent.
CREATE TABLE order_items (
    order_id         TEXT    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_number      INTEGER NOT NULL CHECK (line_number >= 0),  -- 0-based, in the order sent
    sku              TEXT    NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity >= 1),
    unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents >= 0),
    line_total_cents INTEGER NOT NULL CHECK (line_total_cents >= 0),
    PRIMARY KEY (order_id, line_number)
);

-- One row per (user, Idempotency-Key): written in the same transaction as the order it made,
-- so a retried or concurrent create with the key finds it or fails on the primary key and
-- answers with the first order. `request_hash` is the SHA-256 of the canonical request, so the
-- key reused for another request is told apart. Rows older than a day may be purged.
CREATE TABLE idempotency_keys (
    user_id         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,                      -- hex SHA-256
    order_id        TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    created_at      TEXT NOT NULL,
    CONSTRAINT idempotency_keys_user_key PRIMARY KEY (user_id, idempotency_key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
