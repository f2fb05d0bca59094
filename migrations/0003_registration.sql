-- Client registration: dynamic registration (RFC 7591/7592), initial access tokens for the
-- `token` registration policy, and client ID metadata documents cached as client rows.

ALTER TABLE clients
    -- SHA-256 of the RFC 7592 registration access token (self-registered clients only).
    ADD COLUMN registration_token_hash bytea CHECK (registration_token_hash IS NULL OR length(registration_token_hash) = 32),
    -- When the client first completed an authorization (a code was issued).
    ADD COLUMN first_authorized_at timestamptz,
    -- When the client last obtained a token (updated at most about hourly).
    ADD COLUMN last_used_at timestamptz,
    -- For client ID metadata documents: when the cached document must be fetched again.
    ADD COLUMN document_expires_at timestamptz;

CREATE INDEX clients_origin_created ON clients (origin, created_at);

-- Initial access tokens (RFC 7591 §3) for TESSERA_REGISTRATION=token, stored as SHA-256.
CREATE TABLE registration_tokens (
    token_hash bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    note       text        CHECK (length(note) <= 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- How many more registrations it allows; NULL: unlimited until it expires.
    uses_left  integer     CHECK (uses_left IS NULL OR uses_left >= 0)
);
