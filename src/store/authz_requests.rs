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

/// Store a validated request, with its binding to a user if it has one already (the browser's
/// signed-in user).
pub async fn insert(pool: &PgPool, id_hash: &[u8], r: &AuthzRequest) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO authorization_requests
            (id_hash, client_id, redirect_uri, redirect_uri_sent, state, code_challenge, resource_id, scopes, prompt, expires_at,
             nonce, max_age, login_hint, user_id, authenticated_at, auth_time, sid)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10), $11, $12, $13, $14, $15, $16, $17)",
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
        r.login_hint,
        r.user_id,
        r.authenticated_at,
        r.auth_time,
        r.sid
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

/// A pending request with the scopes `user_id` has approved before for its client and
/// resource (`None`: never): one query for the step after a sign-in.
pub async fn get_with_consent(
    pool: &PgPool,
    id_hash: &[u8],
    user_id: Uuid,
) -> Result<Option<(AuthzRequest, Option<Vec<String>>)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT r.client_id, r.redirect_uri, r.redirect_uri_sent, r.state, r.code_challenge, r.resource_id, r.scopes,
                  r.prompt, r.user_id, r.authenticated_at, r.nonce, r.max_age, r.login_hint, r.auth_time, r.sid,
                  c.scopes AS "consented?"
             FROM authorization_requests r
             LEFT JOIN consents c ON c.user_id = $2 AND c.client_id = r.client_id AND c.resource_id = r.resource_id
            WHERE r.id_hash = $1 AND r.used_at IS NULL AND r.expires_at > now()"#,
        id_hash,
        user_id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        let request = AuthzRequest {
            client_id: r.client_id,
            redirect_uri: r.redirect_uri,
            redirect_uri_sent: r.redirect_uri_sent,
            state: r.state,
            code_challenge: r.code_challenge,
            resource_id: r.resource_id,
            scopes: r.scopes,
            prompt: r.prompt,
            user_id: r.user_id,
            authenticated_at: r.authenticated_at,
            nonce: r.nonce,
            max_age: r.max_age,
            login_hint: r.login_hint,
            auth_time: r.auth_time,
            sid: r.sid,
        };
        (request, r.consented)
    }))
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

impl Binding<'_> {
    /// The request as it is once bound (in memory; [`bind_user`] or a claim stores it).
    pub fn apply_to(&self, request: &mut AuthzRequest) {
        request.user_id = Some(self.user_id);
        request.authenticated_at = self.authenticated_at.or(request.authenticated_at);
        request.auth_time = Some(self.auth_time);
        request.sid = Some(self.sid.to_owned());
    }
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

/// Use a pending request once: one bound to `user_id` before, or bound by this claim to the
/// user of `binding`.
pub async fn claim(
    pool: &PgPool,
    id_hash: &[u8],
    user_id: Uuid,
    binding: Option<&Binding<'_>>,
) -> Result<Option<AuthzRequest>, sqlx::Error> {
    sqlx::query_as!(
        AuthzRequest,
        "UPDATE authorization_requests
            SET used_at = now(), user_id = $2, authenticated_at = coalesce($4, authenticated_at),
                auth_time = CASE WHEN $3 THEN $5 ELSE auth_time END, sid = CASE WHEN $3 THEN $6 ELSE sid END
         WHERE id_hash = $1 AND ($3 OR user_id = $2) AND used_at IS NULL AND expires_at > now()
         RETURNING client_id, redirect_uri, redirect_uri_sent, state, code_challenge, resource_id, scopes, prompt,
                   user_id, authenticated_at, nonce, max_age, login_hint, auth_time, sid",
        id_hash,
        user_id,
        binding.is_some(),
        binding.and_then(|b| b.authenticated_at),
        binding.map(|b| b.auth_time),
        binding.map(|b| b.sid)
    )
    .fetch_optional(pool)
    .await
}

/// Delete at most `limit` requests that expired over an hour ago; how many went.
pub async fn prune(conn: &mut sqlx::PgConnection, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM authorization_requests WHERE ctid = ANY(ARRAY(
           SELECT ctid FROM authorization_requests WHERE expires_at < now() - interval '1 hour' LIMIT $1))",
        limit
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
