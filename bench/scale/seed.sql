-- Fill a migrated Tessera database to production volume, in the shape Tessera writes it
-- (bench/scale runs this; psql -v grants=N -v resource=UUID). Per grant: one used code, three
-- refresh tokens (two rotated, one current), five audit records; one user per 10 grants, one
-- dynamically registered client per 20 (at most 50,000), one session per 10 grants, one consent
-- per user. Rows go in in time order over the last 30 days, hashes are SHA-256 as src/store
-- writes them, and every foreign key holds. A refresh token lives 9.5 days past its issue, so
-- about 64 % of the grants are spent (past the 2-day retention with no token or code left): what
-- the clean-up finds after a month of traffic.
\set ON_ERROR_STOP on
SET synchronous_commit = off;
SELECT greatest(:grants / 10, 1) AS users, least(greatest(:grants / 20, 1), 50000) AS clients \gset

INSERT INTO users (id, username, password_hash, created_at)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'seed' || i, '$argon2id$seed',
       now() - interval '60 days'
  FROM generate_series(1, :users) i;

INSERT INTO clients (client_id, client_name, origin, token_endpoint_auth_method, redirect_uris, grant_types,
                     created_at, first_authorized_at, last_used_at, registration_token_hash)
SELECT 'seed-' || i, 'Seeded client ' || i, 'dcr', 'none', '{http://127.0.0.1/callback}',
       '{authorization_code,refresh_token}', now() - interval '60 days', now() - interval '59 days',
       now() - interval '1 day', sha256(('registration ' || i)::bytea)
  FROM generate_series(1, :clients) i;

INSERT INTO grants (id, client_id, user_id, resource_id, scopes, created_at, auth_time, sid)
SELECT gen_random_uuid(), 'seed-' || (1 + i % :clients),
       ('00000000-0000-4000-8000-' || lpad(to_hex(1 + i % :users), 12, '0'))::uuid, :'resource',
       '{tools:read}', at, at, md5(i::text)
  FROM (SELECT i, now() - interval '30 days' * (1 - i::float8 / :grants) AS at
          FROM generate_series(1, :grants) i) s;

INSERT INTO authorization_codes (code_hash, grant_id, client_id, redirect_uri, redirect_uri_sent,
                                 code_challenge, created_at, expires_at, used_at)
SELECT sha256(('code ' || id)::bytea), id, client_id, 'http://127.0.0.1/callback', true,
       'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', created_at, created_at + interval '60 seconds',
       created_at + interval '1 second'
  FROM grants ORDER BY created_at;

INSERT INTO refresh_tokens (token_hash, grant_id, client_id, created_at, expires_at, absolute_expires_at,
                            rotated_at, successor_hash)
SELECT sha256(('refresh ' || g.id || ' ' || k)::bytea), g.id, g.client_id,
       g.created_at + make_interval(hours => k), g.created_at + make_interval(hours => k) + interval '9.5 days',
       g.created_at + interval '30 days',
       CASE WHEN k < 2 THEN g.created_at + make_interval(hours => k + 1) END,
       CASE WHEN k < 2 THEN sha256(('refresh ' || g.id || ' ' || (k + 1))::bytea) END
  FROM grants g CROSS JOIN generate_series(0, 2) k
 ORDER BY g.created_at + make_interval(hours => k);

INSERT INTO audit_events (at, request_id, event, outcome, client_id, subject, resource, scopes, source, digest, detail)
SELECT now() - interval '30 days' * (1 - i::float8 / (:grants * 5)), md5(i::text),
       (ARRAY['token.issued', 'token.issued', 'token.issued', 'authorization.approved', 'login.success'])[1 + i % 5],
       'success', 'seed-' || (1 + (i / 5) % :clients), (1 + (i / 5) % :users)::text,
       'https://mcp.example.com/mcp', 'tools:read', '127.0.0.1', encode(sha256(i::text::bytea), 'hex'),
       'refresh_token'
  FROM generate_series(1, :grants * 5) i;

INSERT INTO sessions (id_hash, data, expires_at, user_id)
SELECT sha256(('session ' || i)::bytea),
       jsonb_build_object('user', jsonb_build_object('id', u, 'username', 'seed' || (1 + i % :users))),
       now() + interval '12 hours' - interval '1 day' * (i % 2), u
  FROM (SELECT i, ('00000000-0000-4000-8000-' || lpad(to_hex(1 + i % :users), 12, '0'))::uuid AS u
          FROM generate_series(1, :users) i) s;

INSERT INTO consents (user_id, client_id, resource_id, scopes, granted_at)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'seed-' || (1 + i % :clients),
       :'resource', '{tools:read}', now() - interval '30 days'
  FROM generate_series(1, :users) i;

VACUUM ANALYZE;
