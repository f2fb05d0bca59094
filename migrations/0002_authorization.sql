-- The authorization-code flow: resources (MCP servers), clients, users, browser sessions,
-- pending authorization requests, grants with their codes and refresh tokens, and consents.
-- Secrets (codes, refresh tokens, client secrets, session ids, request handles) are stored only as
-- SHA-256 digests; passwords as argon2id PHC strings.

CREATE TABLE resources (
    id                uuid        PRIMARY KEY,
    uri               text        NOT NULL UNIQUE CHECK (length(uri) BETWEEN 1 AND 2048),
    name              text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- {"scope": "description", ...}
    scopes            jsonb       NOT NULL DEFAULT '{}',
    default_scopes    text[]      NOT NULL DEFAULT '{}',
    token_ttl_seconds integer     NOT NULL CHECK (token_ttl_seconds BETWEEN 60 AND 86400),
    is_default        boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now()
);
-- At most one default resource.
CREATE UNIQUE INDEX resources_one_default ON resources (is_default) WHERE is_default;

CREATE TABLE clients (
    client_id                  text        PRIMARY KEY CHECK (length(client_id) BETWEEN 1 AND 2048),
    client_name                text        NOT NULL CHECK (length(client_name) BETWEEN 1 AND 200),
    origin                     text        NOT NULL CHECK (origin IN ('admin', 'dcr', 'cimd')),
    token_endpoint_auth_method text        NOT NULL
        CHECK (token_endpoint_auth_method IN ('none', 'client_secret_basic', 'client_secret_post')),
    secret_hash                bytea       CHECK (secret_hash IS NULL OR length(secret_hash) = 32),
    redirect_uris              text[]      NOT NULL DEFAULT '{}',
    grant_types                text[]      NOT NULL,
    -- Resources this client may obtain tokens for; empty means any.
    allowed_resources          uuid[]      NOT NULL DEFAULT '{}',
    -- Registration metadata kept as sent (client_uri, logo_uri, contacts, software_id, ...).
    metadata                   jsonb       NOT NULL DEFAULT '{}',
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CHECK ((token_endpoint_auth_method = 'none') = (secret_hash IS NULL))
);

CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    username      text        NOT NULL CHECK (length(username) BETWEEN 1 AND 64),
    email         text        CHECK (length(email) <= 254),
    password_hash text        NOT NULL,
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));

-- Browser sessions (tower-sessions), keyed by SHA-256 of the session id in the cookie.
CREATE TABLE sessions (
    id_hash    bytea       PRIMARY KEY,
    data       jsonb       NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- An authorization request between /authorize and the code: validated parameters, waiting for
-- login and consent. Single use.
CREATE TABLE authorization_requests (
    id_hash          bytea       PRIMARY KEY,
    client_id        text        NOT NULL REFERENCES clients ON DELETE CASCADE,
    redirect_uri     text        NOT NULL,
    -- Whether redirect_uri was in the request (then the token request must repeat it).
    redirect_uri_sent boolean    NOT NULL,
    state            text,
    code_challenge   text        NOT NULL,
    resource_id      uuid        NOT NULL REFERENCES resources ON DELETE CASCADE,
    scopes           text[]      NOT NULL,
    prompt           text[]      NOT NULL DEFAULT '{}',
    user_id          uuid        REFERENCES users ON DELETE CASCADE,
    authenticated_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    used_at          timestamptz
);
CREATE INDEX authorization_requests_expires_at ON authorization_requests (expires_at);

-- One grant per approval (or per client_credentials client and resource): codes, refresh tokens
-- and access tokens hang off it, and revoking it kills them all.
CREATE TABLE grants (
    id             uuid        PRIMARY KEY,
    client_id      text        NOT NULL REFERENCES clients ON DELETE CASCADE,
    user_id        uuid        REFERENCES users ON DELETE CASCADE,
    resource_id    uuid        NOT NULL REFERENCES resources ON DELETE CASCADE,
    scopes         text[]      NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX grants_client ON grants (client_id);
CREATE INDEX grants_user ON grants (user_id);

CREATE TABLE authorization_codes (
    code_hash      bytea       PRIMARY KEY CHECK (length(code_hash) = 32),
    grant_id       uuid        NOT NULL REFERENCES grants ON DELETE CASCADE,
    client_id      text        NOT NULL,
    redirect_uri   text        NOT NULL,
    redirect_uri_sent boolean  NOT NULL,
    code_challenge text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz
);
CREATE INDEX authorization_codes_expires_at ON authorization_codes (expires_at);

CREATE TABLE refresh_tokens (
    token_hash          bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    grant_id            uuid        NOT NULL REFERENCES grants ON DELETE CASCADE,
    client_id           text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- The earlier of the idle and the absolute expiry.
    expires_at          timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    rotated_at          timestamptz
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE consents (
    user_id     uuid        NOT NULL REFERENCES users ON DELETE CASCADE,
    client_id   text        NOT NULL REFERENCES clients ON DELETE CASCADE,
    resource_id uuid        NOT NULL REFERENCES resources ON DELETE CASCADE,
    scopes      text[]      NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_id, resource_id)
);
