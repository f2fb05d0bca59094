-- Passkeys (WebAuthn): a second factor after the password, or a sign-in of its own
-- (discoverable credentials). `credential` is webauthn-rs's Passkey (public key, counter): not a
-- secret. The WebAuthn user handle is the user's id.
CREATE TABLE passkeys (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES users ON DELETE CASCADE,
    credential_id bytea       NOT NULL UNIQUE CHECK (length(credential_id) BETWEEN 1 AND 1023),
    credential    jsonb       NOT NULL,
    name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);
CREATE INDEX passkeys_user ON passkeys (user_id);
