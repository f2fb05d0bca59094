-- The audit log (append-only) and login throttling state.

CREATE TABLE audit_events (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL,
    request_id  text,
    event       text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('success', 'denied', 'rate_limited', 'error')),
    client_id   text,
    subject     text,
    resource    text,
    scopes      text,
    source      inet,
    -- SHA-256 (hex) of an argument that matters but must not be stored (a token, a username tried).
    digest      text,
    -- A short reason or detail (an error code, a grant type); never a secret.
    detail      text
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_client ON audit_events (client_id, at);
CREATE INDEX audit_events_subject ON audit_events (subject, at);
CREATE INDEX audit_events_event ON audit_events (event, at);

-- Append-only: rows are never changed; only retention deletes old ones.
CREATE FUNCTION tessera_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION tessera_audit_append_only();

-- Failed logins per (account, source), so throttling holds across instances and restarts, and
-- an attacker elsewhere cannot lock the account out from everywhere.
CREATE TABLE login_failures (
    account         text        NOT NULL,
    source          inet        NOT NULL,
    failures        integer     NOT NULL DEFAULT 0,
    last_failure_at timestamptz NOT NULL DEFAULT now(),
    blocked_until   timestamptz,
    PRIMARY KEY (account, source)
);
CREATE INDEX login_failures_source ON login_failures (source, last_failure_at);
