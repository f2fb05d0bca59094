-- OpenID Connect: RS256 keys beside ES256, user profile claims, and what an ID token needs from
-- the authorization request to the code exchange and each refresh.

ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_alg_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_alg_check CHECK (alg IN ('ES256', 'RS256'));

ALTER TABLE users ADD COLUMN name text CHECK (length(name) <= 200);
ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT false;

-- The OpenID parameters of a pending request, and when its user authenticated (for max_age and
-- auth_time) in which browser session (sid).
ALTER TABLE authorization_requests ADD COLUMN nonce text CHECK (length(nonce) <= 512);
ALTER TABLE authorization_requests ADD COLUMN max_age integer CHECK (max_age >= 0);
ALTER TABLE authorization_requests ADD COLUMN login_hint text CHECK (length(login_hint) <= 254);
ALTER TABLE authorization_requests ADD COLUMN auth_time timestamptz;
ALTER TABLE authorization_requests ADD COLUMN sid text CHECK (length(sid) <= 64);

ALTER TABLE authorization_codes ADD COLUMN nonce text CHECK (length(nonce) <= 512);
ALTER TABLE grants ADD COLUMN auth_time timestamptz;
ALTER TABLE grants ADD COLUMN sid text CHECK (length(sid) <= 64);
