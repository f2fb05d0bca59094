-- A second factor: a TOTP authenticator (RFC 6238). The secret is sealed under the master key
-- (AES-256-GCM, AAD "totp:" || user id); `last_step` is the last time step accepted, so a code is
-- used once. Recovery codes are kept as SHA-256 digests, each used once.
CREATE TABLE totp_credentials (
    user_id    uuid        PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    secret_enc bytea       NOT NULL,
    last_step  bigint      NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE recovery_codes (
    user_id   uuid        NOT NULL REFERENCES users ON DELETE CASCADE,
    code_hash bytea       NOT NULL CHECK (length(code_hash) = 32),
    used_at   timestamptz,
    PRIMARY KEY (user_id, code_hash)
);
