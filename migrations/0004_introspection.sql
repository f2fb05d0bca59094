-- Introspection and revocation: resource-server credentials, the access-token deny list, and
-- triggers that announce every change that can make a token inactive, so each instance's
-- in-memory revocation state is invalidated within moments, whatever code path made the change
-- (including cascades from deleted clients, resources and users).

ALTER TABLE resources
    ADD COLUMN credential_id          text  UNIQUE CHECK (length(credential_id) BETWEEN 1 AND 100),
    ADD COLUMN credential_secret_hash bytea CHECK (credential_secret_hash IS NULL OR length(credential_secret_hash) = 32);

-- Revoked access tokens, by jti, until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti        text        PRIMARY KEY CHECK (length(jti) BETWEEN 1 AND 200),
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

CREATE FUNCTION tessera_notify_grant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tessera_grants', OLD.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER grants_revoked AFTER UPDATE OF revoked_at ON grants
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION tessera_notify_grant();
CREATE TRIGGER grants_deleted AFTER DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION tessera_notify_grant();

CREATE FUNCTION tessera_notify_revoked_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tessera_revoked_tokens', NEW.jti || ' ' || floor(extract(epoch FROM NEW.expires_at))::bigint);
    RETURN NULL;
END $$;

CREATE TRIGGER revoked_tokens_added AFTER INSERT ON revoked_tokens
    FOR EACH ROW EXECUTE FUNCTION tessera_notify_revoked_token();

CREATE FUNCTION tessera_notify_client() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('tessera_clients', OLD.client_id);
    ELSE
        PERFORM pg_notify('tessera_clients', NEW.client_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER clients_changed AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH ROW EXECUTE FUNCTION tessera_notify_client();
