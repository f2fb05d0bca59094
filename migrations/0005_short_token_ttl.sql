-- Allow access-token lifetimes down to 5 seconds (end-to-end tests exercise expiry and refresh).
ALTER TABLE resources DROP CONSTRAINT resources_token_ttl_seconds_check;
ALTER TABLE resources ADD CONSTRAINT resources_token_ttl_seconds_check CHECK (token_ttl_seconds BETWEEN 5 AND 86400);
