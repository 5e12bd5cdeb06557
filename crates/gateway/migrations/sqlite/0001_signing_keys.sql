-- Keys that sign access and identity tokens. The newest signs; all of them verify.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    -- PKCS#8 DER, base64: a secret, which is why the store is the gateway's alone.
    private_key TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
