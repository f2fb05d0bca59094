-- Signing keys for access tokens. The private key is PKCS#8, sealed with AES-256-GCM under the
-- master key (nonce || ciphertext || tag, AAD = kid). Which key signs and which are published is
-- derived from activates_at (see src/keys.rs), so every instance agrees without extra state.
CREATE TABLE signing_keys (
    kid             text        PRIMARY KEY CHECK (length(kid) BETWEEN 1 AND 100),
    alg             text        NOT NULL CHECK (alg = 'ES256'),
    public_jwk      jsonb       NOT NULL,
    private_key_enc bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    activates_at    timestamptz NOT NULL
);

CREATE INDEX signing_keys_activates_at ON signing_keys (activates_at);
