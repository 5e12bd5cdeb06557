-- Fixed-window counters of password guesses made through the service itself: wrong current
-- passwords per account (PATCH /users/me) and credential checks per caller and username
-- (POST /internal/credentials). In the database so every replica of the service shares them.
CREATE TABLE attempt_counters (
    key            TEXT   PRIMARY KEY,
    count          BIGINT NOT NULL,
    -- Unix milliseconds; a counter past it starts again from zero.
    window_ends_ms BIGINT NOT NULL
);
CREATE INDEX attempt_counters_window_ends_ms ON attempt_counters (window_ends_ms);
