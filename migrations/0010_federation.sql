-- Sign-in through upstream identity providers: the providers (client secrets sealed under the
-- master key), the upstream identities linked to local accounts, and accounts without a password
-- (created on first federated login, or invited by email to claim with one).

CREATE TABLE upstreams (
    name                  text        PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    -- 'oidc' (discovery, ID token) or 'github' (OAuth 2.0 and the GitHub REST API).
    kind                  text        NOT NULL CHECK (kind IN ('oidc', 'github')),
    -- The OpenID issuer, or GitHub's web address (https://github.com or an Enterprise Server).
    issuer                text        NOT NULL CHECK (length(issuer) BETWEEN 1 AND 1024),
    -- GitHub only: the REST API base (https://api.github.com, or https://HOST/api/v3).
    api_url               text        CHECK (length(api_url) <= 1024),
    client_id             text        NOT NULL CHECK (length(client_id) BETWEEN 1 AND 512),
    -- AES-256-GCM under the master key, additional data 'upstream:' || name.
    client_secret_enc     bytea       NOT NULL,
    scopes                text[]      NOT NULL,
    button                text        NOT NULL CHECK (length(button) BETWEEN 1 AND 100),
    allowed_domains       text[]      NOT NULL DEFAULT '{}',
    allowed_emails        text[]      NOT NULL DEFAULT '{}',
    -- Any one of these upstream groups (OIDC `groups` claim) or GitHub organizations.
    required_groups       text[]      NOT NULL DEFAULT '{}',
    -- 'jit': an unknown person gets an account on first login; 'invite': only invited emails.
    accounts              text        NOT NULL CHECK (accounts IN ('jit', 'invite')),
    -- Link a first login to an existing account with the same (verified) email.
    link_existing         boolean     NOT NULL DEFAULT false,
    -- Operator's choice: the provider may be on a private or loopback address.
    allow_private_network boolean     NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE federated_identities (
    upstream      text        NOT NULL REFERENCES upstreams (name) ON DELETE CASCADE,
    -- The upstream's subject (OIDC `sub`, GitHub's numeric user id): never the email.
    subject       text        NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email         text        CHECK (length(email) <= 254),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upstream, subject)
);
CREATE INDEX federated_identities_user ON federated_identities (user_id);

-- Accounts that sign in only through an upstream have no password.
ALTER TABLE users ALTER COLUMN password_hash DROP NOT NULL;
-- An invitation: an account with an email and no password, claimed by the first federated login
-- whose verified email matches.
ALTER TABLE users ADD COLUMN invited boolean NOT NULL DEFAULT false;
CREATE INDEX users_email_lower ON users (lower(email));
