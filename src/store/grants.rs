//! Grants and what hangs off them: authorization codes, refresh tokens, and remembered consents.
//! Codes and refresh tokens are keyed by their SHA-256; single use is enforced by one atomic
//! `UPDATE ... WHERE used_at IS NULL` (or `rotated_at IS NULL`) per use.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::authz_requests::Binding;
use super::profile::{Profile, joined_profile};

/// Channel on which a trigger announces a revoked or deleted grant (payload: the grant id).
pub const CHANNEL: &str = "tessera_grants";

/// Lifetime of an authorization code.
pub const CODE_TTL_SECONDS: f64 = 60.0;

pub struct NewCode<'a> {
    pub grant_id: Uuid,
    pub client_id: &'a str,
    pub user_id: Uuid,
    pub resource_id: Uuid,
    pub scopes: &'a [String],
    pub code_hash: &'a [u8],
    pub redirect_uri: &'a str,
    pub redirect_uri_sent: bool,
    pub code_challenge: &'a str,
    /// OpenID Connect: the request's nonce, and when and in which session the user signed in.
    pub nonce: Option<&'a str>,
    pub auth_time: Option<chrono::DateTime<chrono::Utc>>,
    pub sid: Option<&'a str>,
}

/// The pending authorization request a code is issued for, used up by the statement that
/// creates the code.
pub struct RequestClaim<'a> {
    /// The SHA-256 of the request's handle.
    pub id_hash: &'a [u8],
    /// The request's binding to the code's user, stored with the claim when it was not stored
    /// before (the person signed in just now); without it, the request must be bound to that
    /// user already.
    pub binding: Option<&'a Binding<'a>>,
}

/// Create the grant of an approval and its authorization code, together; with `claim`, also
/// use up the pending request, all in one statement. False when the request was no longer
/// there to claim (used, expired, or bound to someone else): then nothing was created.
pub async fn create_with_code(
    pool: &PgPool,
    c: &NewCode<'_>,
    claim: Option<&RequestClaim<'_>>,
) -> Result<bool, sqlx::Error> {
    let binding = claim.and_then(|r| r.binding);
    let created = sqlx::query!(
        "WITH r AS (
            UPDATE authorization_requests
               SET used_at = now(), authenticated_at = coalesce($16, authenticated_at),
                   auth_time = CASE WHEN $15 THEN $11 ELSE auth_time END, sid = CASE WHEN $15 THEN $12 ELSE sid END,
                   user_id = $3
             WHERE $14::bytea IS NOT NULL AND id_hash = $14 AND ($15 OR user_id = $3)
               AND used_at IS NULL AND expires_at > now()
            RETURNING 1 AS one
         ), g AS (
            INSERT INTO grants (id, client_id, user_id, resource_id, scopes, auth_time, sid)
            SELECT $1, $2, $3, $4, $5, $11, $12 WHERE $14::bytea IS NULL OR EXISTS (SELECT 1 FROM r)
            RETURNING id
         )
         INSERT INTO authorization_codes (code_hash, grant_id, client_id, redirect_uri, redirect_uri_sent, code_challenge, expires_at,
                                          nonce)
         SELECT $6, g.id, $2, $7, $8, $9, now() + make_interval(secs => $10), $13 FROM g",
        c.grant_id,
        c.client_id,
        c.user_id,
        c.resource_id,
        c.scopes,
        c.code_hash,
        c.redirect_uri,
        c.redirect_uri_sent,
        c.code_challenge,
        CODE_TTL_SECONDS,
        c.auth_time,
        c.sid,
        c.nonce,
        claim.map(|r| r.id_hash),
        binding.is_some(),
        binding.and_then(|b| b.authenticated_at)
    )
    .execute(pool)
    .await?;
    Ok(created.rows_affected() == 1)
}

/// A code claimed for one use, with its user's profile (for an ID token).
pub struct ClaimedCode {
    pub grant_id: Uuid,
    pub redirect_uri: String,
    pub redirect_uri_sent: bool,
    pub code_challenge: String,
    pub user_id: Option<Uuid>,
    pub resource_id: Uuid,
    pub scopes: Vec<String>,
    pub nonce: Option<String>,
    pub auth_time: Option<chrono::DateTime<chrono::Utc>>,
    pub sid: Option<String>,
    pub profile: Option<Profile>,
}

/// The first refresh token of a grant, issued with the code exchange.
pub struct FirstRefresh<'a> {
    pub token_hash: &'a [u8],
    pub idle_ttl_seconds: f64,
    pub absolute_ttl_seconds: f64,
}

/// Claim an unused, unexpired code issued to `client_id` whose grant still stands, and (with
/// `refresh`) store the grant's first refresh token, in one statement: one round trip, one
/// commit. A check that fails after the claim revokes the grant, and the token with it.
pub async fn claim_code(
    pool: &PgPool,
    code_hash: &[u8],
    client_id: &str,
    refresh: Option<&FirstRefresh<'_>>,
) -> Result<Option<ClaimedCode>, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH claimed AS (
               UPDATE authorization_codes c SET used_at = now()
               FROM grants g LEFT JOIN users u ON u.id = g.user_id
               WHERE c.code_hash = $1 AND c.used_at IS NULL AND c.client_id = $2 AND c.expires_at > now()
                 AND g.id = c.grant_id AND g.revoked_at IS NULL
               RETURNING c.grant_id, c.redirect_uri, c.redirect_uri_sent, c.code_challenge, g.user_id, g.resource_id,
                         g.scopes, c.nonce, g.auth_time, g.sid, u.username, u.name, u.email, u.email_verified,
                         u.updated_at
           ), first_refresh AS (
               INSERT INTO refresh_tokens (token_hash, grant_id, client_id, expires_at, absolute_expires_at)
               SELECT $3, grant_id, $2, now() + make_interval(secs => least($4::float8, $5::float8)),
                      now() + make_interval(secs => $5::float8)
               FROM claimed WHERE $3::bytea IS NOT NULL
           )
           SELECT grant_id AS "grant_id!", redirect_uri AS "redirect_uri!", redirect_uri_sent AS "redirect_uri_sent!",
                  code_challenge AS "code_challenge!", user_id AS "user_id?", resource_id AS "resource_id!",
                  scopes AS "scopes!", nonce AS "nonce?", auth_time AS "auth_time?", sid AS "sid?",
                  username AS "username?", name AS "name?", email AS "email?", email_verified AS "email_verified?",
                  updated_at AS "updated_at?"
           FROM claimed"#,
        code_hash,
        client_id,
        refresh.map(|r| r.token_hash),
        refresh.map_or(0.0, |r| r.idle_ttl_seconds),
        refresh.map_or(0.0, |r| r.absolute_ttl_seconds)
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| ClaimedCode {
        profile: joined_profile(r.user_id, r.username, r.name, r.email, r.email_verified, r.updated_at),
        grant_id: r.grant_id,
        redirect_uri: r.redirect_uri,
        redirect_uri_sent: r.redirect_uri_sent,
        code_challenge: r.code_challenge,
        user_id: r.user_id,
        resource_id: r.resource_id,
        scopes: r.scopes,
        nonce: r.nonce,
        auth_time: r.auth_time,
        sid: r.sid,
    }))
}

/// Why a code could not be claimed.
pub struct CodeState {
    pub grant_id: Uuid,
    pub client_id: String,
    pub used: bool,
}

pub async fn code_state(pool: &PgPool, code_hash: &[u8]) -> Result<Option<CodeState>, sqlx::Error> {
    sqlx::query_as!(
        CodeState,
        r#"SELECT grant_id, client_id, used_at IS NOT NULL AS "used!" FROM authorization_codes WHERE code_hash = $1"#,
        code_hash
    )
    .fetch_optional(pool)
    .await
}

/// Revoke a grant (idempotent); `true` if it was standing. A trigger announces it.
pub async fn revoke(pool: &PgPool, grant_id: Uuid, reason: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE grants SET revoked_at = now(), revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
        grant_id,
        reason
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn revoke_user_grants(conn: &mut PgConnection, user_id: Uuid, reason: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE grants SET revoked_at = now(), revoked_reason = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
        reason
    )
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// The grant behind a rotated refresh token.
pub struct Rotated {
    pub grant_id: Uuid,
    pub user_id: Option<Uuid>,
    pub resource_id: Uuid,
    pub scopes: Vec<String>,
    /// When and in which session the user signed in (OpenID Connect grants).
    pub auth_time: Option<chrono::DateTime<chrono::Utc>>,
    pub sid: Option<String>,
    /// The user's profile (for an ID token).
    pub profile: Option<Profile>,
}

/// What a refresh request asks for.
pub struct RefreshRequest<'a> {
    pub old_hash: &'a [u8],
    pub new_hash: &'a [u8],
    pub client_id: &'a str,
    /// Scopes the new access token should carry (empty: all of the grant's).
    pub wanted_scopes: &'a [String],
    /// The resource the client named, if any.
    pub wanted_resource: Option<Uuid>,
    pub idle_ttl_seconds: f64,
}

/// One refresh request of a batch (see [`rotate_refresh_many`]), owning its parts.
#[derive(Clone, Debug)]
pub struct QueuedRefresh {
    pub old_hash: Vec<u8>,
    pub new_hash: Vec<u8>,
    pub client_id: String,
    /// The wanted scopes joined by spaces (a scope token never holds one); empty: all.
    pub wanted_scopes: String,
    pub wanted_resource: Option<Uuid>,
    pub idle_ttl_seconds: f64,
}

/// Rotate in one statement, for each request: mark the presented token used and insert its
/// successor, provided it is unused, unexpired, issued to this client, its grant stands, is for
/// the named resource and covers the wanted scopes. `None` means nothing changed for that
/// request; [`refresh_state`] tells why. Many requests share the statement (one commit). The
/// successors' INSERT (a data-modifying `WITH`, run to completion though nothing reads it)
/// inserts one row per rotated token or fails the whole statement.
/// Answers in request order. A token presented twice in one batch is rotated once, for its first request; the
/// other gets `None`, as it would had it come a moment later.
///
/// `found` looks the presented tokens up by their digest first, on its own (`MATERIALIZED`):
/// joined in one step, the planner paired every request with every grant when the grants table
/// was small (a few hundred rows, as in a small deployment) and probed the token index for each
/// pair, hundreds of index probes per rotation. Run it on a pool of [`super::custom_plans`]: a
/// generic plan cached while the tables were small (the first minutes of a new database) went on
/// scanning them whole once they had grown, until the next ANALYZE.
pub async fn rotate_refresh_many(
    pool: &PgPool,
    requests: &[QueuedRefresh],
) -> Result<Vec<Option<Rotated>>, sqlx::Error> {
    let old: Vec<Vec<u8>> = requests.iter().map(|r| r.old_hash.clone()).collect();
    let new: Vec<Vec<u8>> = requests.iter().map(|r| r.new_hash.clone()).collect();
    let clients: Vec<String> = requests.iter().map(|r| r.client_id.clone()).collect();
    let wanted: Vec<String> = requests.iter().map(|r| r.wanted_scopes.clone()).collect();
    let resources: Vec<Option<Uuid>> = requests.iter().map(|r| r.wanted_resource).collect();
    let idle: Vec<f64> = requests.iter().map(|r| r.idle_ttl_seconds).collect();
    let rows = sqlx::query!(
        r#"WITH input AS (
            SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::text[], $5::uuid[], $6::float8[])
                AS i(old_hash, new_hash, client_id, wanted, wanted_resource, idle)
         ), found AS MATERIALIZED (
            SELECT i.*, r.grant_id FROM input i JOIN refresh_tokens r ON r.token_hash = i.old_hash
         ), old AS (
            UPDATE refresh_tokens r SET rotated_at = now(), successor_hash = i.new_hash
            FROM found i JOIN grants g ON g.id = i.grant_id
            WHERE r.token_hash = i.old_hash AND r.rotated_at IS NULL AND r.client_id = i.client_id
              AND r.expires_at > now()
              AND g.revoked_at IS NULL AND g.scopes @> string_to_array(i.wanted, ' ')
              AND (i.wanted_resource IS NULL OR g.resource_id = i.wanted_resource)
            RETURNING r.token_hash AS old_hash, i.new_hash, i.idle, r.client_id, r.grant_id, r.absolute_expires_at,
                      g.user_id, g.resource_id, g.scopes, g.auth_time, g.sid
         ), new AS (
            INSERT INTO refresh_tokens (token_hash, grant_id, client_id, expires_at, absolute_expires_at)
            SELECT old.new_hash, old.grant_id, old.client_id,
                   least(now() + make_interval(secs => old.idle), old.absolute_expires_at), old.absolute_expires_at
            FROM old
         )
         SELECT old.old_hash AS "old_hash!", old.grant_id AS "grant_id!", old.user_id,
                old.resource_id AS "resource_id!", old.scopes AS "scopes!", old.auth_time, old.sid,
                u.username AS "username?", u.name AS "name?", u.email AS "email?",
                u.email_verified AS "email_verified?", u.updated_at AS "updated_at?"
         FROM old LEFT JOIN users u ON u.id = old.user_id"#,
        &old,
        &new,
        &clients,
        &wanted,
        &resources as &[Option<Uuid>],
        &idle
    )
    .fetch_all(pool)
    .await?;
    let mut by_hash: std::collections::HashMap<Vec<u8>, Rotated> = rows
        .into_iter()
        .map(|r| {
            let rotated = Rotated {
                profile: joined_profile(r.user_id, r.username, r.name, r.email, r.email_verified, r.updated_at),
                grant_id: r.grant_id,
                user_id: r.user_id,
                resource_id: r.resource_id,
                scopes: r.scopes,
                auth_time: r.auth_time,
                sid: r.sid,
            };
            (r.old_hash, rotated)
        })
        .collect();
    Ok(requests.iter().map(|r| by_hash.remove(&r.old_hash)).collect())
}

/// Within `grace_seconds` of its rotation, a rotated token presented again by its client gets
/// its successor back (the caller derives it again and checks its digest), provided the
/// successor is unused and unexpired, the grant stands, and the request fits the grant as a
/// rotation would. The grant and the successor's digest; `None` otherwise.
pub async fn replay_within_grace(
    pool: &PgPool,
    r: &RefreshRequest<'_>,
    grace_seconds: f64,
) -> Result<Option<(Rotated, Vec<u8>)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT o.grant_id, g.user_id, g.resource_id, g.scopes, g.auth_time, g.sid, s.token_hash AS successor_hash,
                  u.username AS "username?", u.name AS "name?", u.email AS "email?",
                  u.email_verified AS "email_verified?", u.updated_at AS "updated_at?"
           FROM refresh_tokens o
           JOIN refresh_tokens s ON s.token_hash = o.successor_hash
           JOIN grants g ON g.id = o.grant_id
           LEFT JOIN users u ON u.id = g.user_id
           WHERE o.token_hash = $1 AND o.client_id = $2 AND o.rotated_at > now() - make_interval(secs => $3)
             AND s.rotated_at IS NULL AND s.expires_at > now()
             AND g.revoked_at IS NULL AND g.scopes @> $4::text[] AND ($5::uuid IS NULL OR g.resource_id = $5)"#,
        r.old_hash,
        r.client_id,
        grace_seconds,
        r.wanted_scopes,
        r.wanted_resource
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| {
        let rotated = Rotated {
            profile: joined_profile(row.user_id, row.username, row.name, row.email, row.email_verified, row.updated_at),
            grant_id: row.grant_id,
            user_id: row.user_id,
            resource_id: row.resource_id,
            scopes: row.scopes,
            auth_time: row.auth_time,
            sid: row.sid,
        };
        (rotated, row.successor_hash)
    }))
}

/// What a refresh token is, when it could not be rotated.
pub struct RefreshState {
    pub grant_id: Uuid,
    pub client_id: String,
    pub rotated: bool,
    pub expired: bool,
    pub grant_revoked: bool,
    pub scopes: Vec<String>,
    pub resource_id: Uuid,
    pub user_id: Option<Uuid>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

pub async fn refresh_state(pool: &PgPool, token_hash: &[u8]) -> Result<Option<RefreshState>, sqlx::Error> {
    sqlx::query_as!(
        RefreshState,
        r#"SELECT r.grant_id, r.client_id, r.rotated_at IS NOT NULL AS "rotated!", r.expires_at <= now() AS "expired!",
                  g.revoked_at IS NOT NULL AS "grant_revoked!", g.scopes, g.resource_id, g.user_id, r.created_at,
                  r.expires_at
           FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.token_hash = $1"#,
        token_hash
    )
    .fetch_optional(pool)
    .await
}

/// The scopes a user already approved for a client and resource.
pub async fn consented_scopes(
    pool: &PgPool,
    user_id: Uuid,
    client_id: &str,
    resource_id: Uuid,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2 AND resource_id = $3",
        user_id,
        client_id,
        resource_id
    )
    .fetch_optional(pool)
    .await
}

/// Remember an approval, adding its scopes to those approved before.
pub async fn remember_consent(
    pool: &PgPool,
    user_id: Uuid,
    client_id: &str,
    resource_id: Uuid,
    scopes: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO consents (user_id, client_id, resource_id, scopes) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, client_id, resource_id) DO UPDATE
         SET scopes = ARRAY(SELECT DISTINCT s FROM unnest(consents.scopes || EXCLUDED.scopes) AS s ORDER BY s),
             granted_at = now()",
        user_id,
        client_id,
        resource_id,
        scopes
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Delete at most `limit` codes that expired over an hour ago; how many went.
pub async fn prune_codes(conn: &mut PgConnection, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM authorization_codes WHERE ctid = ANY(ARRAY(
           SELECT ctid FROM authorization_codes WHERE expires_at < now() - interval '1 hour' LIMIT $1))",
        limit
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Delete at most `limit` refresh tokens that expired over a day ago; how many went.
pub async fn prune_refresh_tokens(conn: &mut PgConnection, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM refresh_tokens WHERE ctid = ANY(ARRAY(
           SELECT ctid FROM refresh_tokens WHERE expires_at < now() - interval '1 day' LIMIT $1))",
        limit
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// One step of the walk over the grants in id order: of the `limit` grants after `after`, delete
/// those that are spent (older than the retention, with no refresh token and no code left).
/// Returns how many went and the last id looked at (`None`: the walk is over). Spent grants go
/// without a notification each (`tessera.pruning`, migration 0017): no token of theirs is alive.
pub async fn prune_grants(
    conn: &mut PgConnection,
    after: Uuid,
    limit: i64,
    retention_seconds: f64,
) -> Result<(u64, Option<Uuid>), sqlx::Error> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query_scalar!("SELECT set_config('tessera.pruning', 'on', true)").fetch_one(&mut *tx).await?;
    let row = sqlx::query!(
        r#"WITH batch AS (SELECT id FROM grants WHERE id > $1 ORDER BY id LIMIT $2),
                gone AS (
                    DELETE FROM grants g USING batch b
                    WHERE g.id = b.id AND g.created_at < now() - make_interval(secs => $3)
                      AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = g.id)
                      AND NOT EXISTS (SELECT 1 FROM authorization_codes c WHERE c.grant_id = g.id)
                    RETURNING 1)
           SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS "last: Uuid",
                  (SELECT count(*) FROM gone) AS "deleted!""#,
        after,
        limit,
        retention_seconds
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((u64::try_from(row.deleted).unwrap_or(0), row.last))
}

/// Forget a user's approvals (for one client or all) and revoke the grants made with them.
/// Returns how many approvals were forgotten and grants revoked.
pub async fn revoke_consent(pool: &PgPool, user_id: Uuid, client_id: Option<&str>) -> Result<(u64, u64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let consents = sqlx::query!(
        "DELETE FROM consents WHERE user_id = $1 AND ($2::text IS NULL OR client_id = $2)",
        user_id,
        client_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let grants = sqlx::query!(
        "UPDATE grants SET revoked_at = now(), revoked_reason = 'consent_revoked'
         WHERE user_id = $1 AND ($2::text IS NULL OR client_id = $2) AND revoked_at IS NULL",
        user_id,
        client_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((consents, grants))
}

/// Revoke the grant of a refresh token issued to `client_id`, in one statement; the grant id,
/// or `None` when the token is unknown, another client's, or its grant already revoked.
pub async fn revoke_by_refresh_token(
    pool: &PgPool,
    token_hash: &[u8],
    client_id: &str,
    reason: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "UPDATE grants g SET revoked_at = now(), revoked_reason = $3
         FROM refresh_tokens r
         WHERE r.token_hash = $1 AND r.client_id = $2 AND g.id = r.grant_id AND g.revoked_at IS NULL
         RETURNING g.id",
        token_hash,
        client_id,
        reason
    )
    .fetch_optional(pool)
    .await
}

/// [`revoke_by_refresh_token`] for many `(token hash, client, reason)` in one statement (one
/// commit); for each, in order, the grant it revoked. Two tokens of one grant in one batch: the
/// grant is revoked once, and the answer names it for one of them.
pub async fn revoke_by_refresh_tokens(
    pool: &PgPool,
    requests: &[(Vec<u8>, String, String)],
) -> Result<Vec<Option<Uuid>>, sqlx::Error> {
    let hashes: Vec<Vec<u8>> = requests.iter().map(|r| r.0.clone()).collect();
    let clients: Vec<String> = requests.iter().map(|r| r.1.clone()).collect();
    let reasons: Vec<String> = requests.iter().map(|r| r.2.clone()).collect();
    let rows = sqlx::query!(
        r#"UPDATE grants g SET revoked_at = now(), revoked_reason = i.reason
           FROM unnest($1::bytea[], $2::text[], $3::text[]) AS i(token_hash, client_id, reason)
           JOIN refresh_tokens r ON r.token_hash = i.token_hash AND r.client_id = i.client_id
           WHERE g.id = r.grant_id AND g.revoked_at IS NULL
           RETURNING g.id, i.token_hash AS "token_hash!""#,
        &hashes,
        &clients,
        &reasons
    )
    .fetch_all(pool)
    .await?;
    let mut by_hash: std::collections::HashMap<Vec<u8>, Uuid> =
        rows.into_iter().map(|r| (r.token_hash, r.id)).collect();
    Ok(requests.iter().map(|r| by_hash.remove(&r.0)).collect())
}

/// One standing grant of a user, with what the account page shows of its client and resource.
pub struct UserGrant {
    pub id: Uuid,
    pub client_id: String,
    pub client_name: String,
    /// `admin`, `dcr` or `cimd`.
    pub client_origin: String,
    pub resource_id: Uuid,
    pub resource_uri: String,
    pub resource_name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// The last refresh (the newest refresh token), if any.
    pub last_refreshed_at: Option<DateTime<Utc>>,
}

/// A user's grants that can still yield a token: not revoked, and with a live refresh token or
/// young enough that its access tokens may not have expired (a day, the longest lifetime).
pub async fn user_grants(pool: &PgPool, user_id: Uuid) -> Result<Vec<UserGrant>, sqlx::Error> {
    sqlx::query_as!(
        UserGrant,
        r#"SELECT g.id, g.client_id, c.client_name, c.origin AS client_origin, g.resource_id,
                  r.uri AS resource_uri, r.name AS resource_name, g.scopes, g.created_at,
                  (SELECT max(t.created_at) FROM refresh_tokens t WHERE t.grant_id = g.id) AS last_refreshed_at
           FROM grants g
           JOIN clients c ON c.client_id = g.client_id
           JOIN resources r ON r.id = g.resource_id
           WHERE g.user_id = $1 AND g.revoked_at IS NULL
             AND (g.created_at > now() - interval '1 day'
                  OR EXISTS (SELECT 1 FROM refresh_tokens t
                             WHERE t.grant_id = g.id AND t.rotated_at IS NULL AND t.expires_at > now()))
           ORDER BY g.created_at
           LIMIT 1000"#,
        user_id
    )
    .fetch_all(pool)
    .await
}

/// A user disconnects an application from a resource: its approval is forgotten and every grant
/// of that user, client and resource revoked. The ids of the grants revoked.
pub async fn disconnect(
    pool: &PgPool,
    user_id: Uuid,
    client_id: &str,
    resource_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "DELETE FROM consents WHERE user_id = $1 AND client_id = $2 AND resource_id = $3",
        user_id,
        client_id,
        resource_id
    )
    .execute(&mut *tx)
    .await?;
    let revoked = sqlx::query_scalar!(
        "UPDATE grants SET revoked_at = now(), revoked_reason = 'user_disconnected'
         WHERE user_id = $1 AND client_id = $2 AND resource_id = $3 AND revoked_at IS NULL
         RETURNING id",
        user_id,
        client_id,
        resource_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(revoked)
}
