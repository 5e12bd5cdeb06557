-- The secret that signs device tokens (HMAC-SHA256; see auth/device.rs): one row, made by the
-- first replica that starts and read by every other, so a device token from any replica is
-- known to all. A secret, like the signing keys: the store is the gateway's alone.
CREATE TABLE device_secret (
    id         INTEGER PRIMARY KEY,
    secret     TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);
