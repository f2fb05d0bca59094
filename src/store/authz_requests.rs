//! The `authorization_requests` table: a validated authorization request waiting for login and
//! consent, keyed by the SHA-256 of its handle. Used once.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// How long a person has to log in and approve.
pub const REQUEST_TTL_SECONDS: f64 = 600.0;

#[derive(Clone, Debug)]
pub struct AuthzRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_uri_sent: bool,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resource_id: Uuid,
    pub scopes: Vec<String>,
    pub prompt: Vec<String>,
    pub user_id: Option<Uuid>,
    /// Set when the user signed in for this very request (which satisfies `prompt=login`).
    pub authenticated_at: Option<DateTime<Utc>>,
    /// OpenID Connect: echoed in the ID token.
    pub nonce: Option<String>,
    /// OpenID Connect: the user must have authenticated within this many seconds.
    pub max_age: Option<i32>,
    /// OpenID Connect: the account to suggest on the login page.
    pub login_hint: Option<String>,
    /// When the bound user authenticated (the session's sign-in, or this request's).
    pub auth_time: Option<DateTime<Utc>>,
    /// The browser session the user is signed in with (the ID token's `sid`).
    pub sid: Option<String>,
}

pub async fn insert(pool: &PgPool, id_hash: &[u8], r: &AuthzRequest) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO authorization_requests
            (id_hash, client_id, redirect_uri, redirect_uri_sent, state, code_challenge, resource_id, scopes, prompt, expires_at,
             nonce, max_age, login_hint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10), $11, $12, $13)",
        id_hash,
        r.client_id,
        r.redirect_uri,
        r.redirect_uri_sent,
        r.state,
        r.code_challenge,
        r.resource_id,
        &r.scopes,
        &r.prompt,
        REQUEST_TTL_SECONDS,
        r.nonce,
        r.max_age,
        r.login_hint
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A pending (unused, unexpired) request.
pub async fn get(pool: &PgPool, id_hash: &[u8]) -> Result<Option<AuthzRequest>, sqlx::Error> {
    sqlx::query_as!(
        AuthzRequest,
        "SELECT client_id, redirect_uri, redirect_uri_sent, state, code_challenge, resource_id, scopes, prompt,
                user_id, authenticated_at, nonce, max_age, login_hint, auth_time, sid
         FROM authorization_requests WHERE id_hash = $1 AND used_at IS NULL AND expires_at > now()",
        id_hash
    )
    .fetch_optional(pool)
    .await
}

/// Who approves a pending request: the user, when they authenticated, in which session, and
/// whether they signed in for this very request.
pub struct Binding<'a> {
    pub user_id: Uuid,
    pub auth_time: DateTime<Utc>,
    pub sid: &'a str,
    /// Set when the user just logged in for it (which satisfies `prompt=login`).
    pub authenticated_at: Option<DateTime<Utc>>,
}

/// Bind a pending request to the user who will approve it.
pub async fn bind_user(pool: &PgPool, id_hash: &[u8], b: &Binding<'_>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE authorization_requests SET user_id = $2, authenticated_at = coalesce($3, authenticated_at),
                auth_time = $4, sid = $5
         WHERE id_hash = $1 AND used_at IS NULL AND expires_at > now()",
        id_hash,
        b.user_id,
        b.authenticated_at,
        b.auth_time,
        b.sid
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Use a pending request bound to `user_id`, once.
pub async fn claim(pool: &PgPool, id_hash: &[u8], user_id: Uuid) -> Result<Option<AuthzRequest>, sqlx::Error> {
    sqlx::query_as!(
        AuthzRequest,
        "UPDATE authorization_requests SET used_at = now()
         WHERE id_hash = $1 AND user_id = $2 AND used_at IS NULL AND expires_at > now()
         RETURNING client_id, redirect_uri, redirect_uri_sent, state, code_challenge, resource_id, scopes, prompt,
                   user_id, authenticated_at, nonce, max_age, login_hint, auth_time, sid",
        id_hash,
        user_id
    )
    .fetch_optional(pool)
    .await
}

pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!("DELETE FROM authorization_requests WHERE expires_at < now() - interval '1 hour'")
        .execute(pool)
        .await?
        .rows_affected())
}
