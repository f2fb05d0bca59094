//! The `users` table: local accounts.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::profile::Profile;

#[derive(Clone, Debug)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    /// `None`: the account signs in only through an upstream identity provider.
    pub password_hash: Option<String>,
    pub disabled: bool,
    /// Bumped by a password change or a disable; sessions signed in under another are void.
    pub session_generation: i32,
    pub created_at: DateTime<Utc>,
    /// The full name (OpenID Connect `name`).
    pub name: Option<String>,
    /// Whether the operator vouched for the email (OpenID Connect `email_verified`).
    pub email_verified: bool,
    pub updated_at: DateTime<Utc>,
    /// Invited by email, waiting for its first federated login to claim it.
    pub invited: bool,
}

impl User {
    pub fn profile(&self) -> Profile {
        Profile {
            id: self.id,
            username: self.username.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            email_verified: self.email_verified,
            updated_at: self.updated_at,
        }
    }
}

/// Find a user by name, ignoring case.
pub async fn by_username(pool: &PgPool, username: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "SELECT id, username, email, password_hash, disabled, session_generation, created_at, name, email_verified, updated_at, invited FROM users WHERE lower(username) = lower($1)",
        username
    )
    .fetch_optional(pool)
    .await
}

/// Find a user by name, ignoring case, for a password sign-in: with whether they have a second
/// factor (an authenticator app or a passkey), in the same query.
pub async fn for_sign_in(pool: &PgPool, username: &str) -> Result<Option<(User, bool)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT id, username, email, password_hash, disabled, session_generation, created_at, name, email_verified,
                  updated_at, invited,
                  EXISTS (SELECT 1 FROM totp_credentials t WHERE t.user_id = users.id)
                  OR EXISTS (SELECT 1 FROM passkeys p WHERE p.user_id = users.id) AS "second_factor!"
             FROM users WHERE lower(username) = lower($1)"#,
        username
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        let user = User {
            id: r.id,
            username: r.username,
            email: r.email,
            password_hash: r.password_hash,
            disabled: r.disabled,
            session_generation: r.session_generation,
            created_at: r.created_at,
            name: r.name,
            email_verified: r.email_verified,
            updated_at: r.updated_at,
            invited: r.invited,
        };
        (user, r.second_factor)
    }))
}

pub async fn by_id(pool: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "SELECT id, username, email, password_hash, disabled, session_generation, created_at, name, email_verified, updated_at, invited FROM users WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await
}

/// The accounts with this email, ignoring case (several only if an operator made them so).
pub async fn by_email(conn: &mut PgConnection, email: &str) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "SELECT id, username, email, password_hash, disabled, session_generation, created_at, name, email_verified, updated_at, invited FROM users WHERE lower(email) = lower($1) LIMIT 2",
        email
    )
    .fetch_all(conn)
    .await
}

/// A new account for a person who signed in through an upstream provider: no password, the
/// upstream's profile. `false` if the name is taken.
pub async fn insert_federated(
    conn: &mut PgConnection,
    id: Uuid,
    username: &str,
    p: &NewProfile<'_>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO users (id, username, email, name, email_verified) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        id,
        username,
        p.email,
        p.name,
        p.email_verified
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A profile from an upstream provider.
#[derive(Clone, Copy, Debug)]
pub struct NewProfile<'a> {
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub email_verified: bool,
}

/// Claim an invitation: the account is no longer one, and its email is now verified (the
/// upstream vouched for it). `false` if it was not (or no longer) an invitation.
pub async fn claim_invitation(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE users SET invited = false, email_verified = true, updated_at = now() WHERE id = $1 AND invited",
        id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn list(pool: &PgPool) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "SELECT id, username, email, password_hash, disabled, session_generation, created_at, name, email_verified, updated_at, invited FROM users ORDER BY lower(username)"
    )
    .fetch_all(pool)
    .await
}

/// Insert a user; `false` if the name is taken.
pub async fn insert(
    pool: &PgPool,
    id: Uuid,
    username: &str,
    email: Option<&str>,
    password_hash: Option<&str>,
) -> Result<bool, sqlx::Error> {
    // Without a password, an account with an email is an invitation.
    let done = sqlx::query!(
        "INSERT INTO users (id, username, email, password_hash, invited) VALUES ($1, $2, $3, $4, $4::text IS NULL AND $3::text IS NOT NULL)
         ON CONFLICT DO NOTHING",
        id,
        username,
        email,
        password_hash
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A change of profile: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct ProfileChange<'a> {
    pub email: Option<Option<&'a str>>,
    pub name: Option<Option<&'a str>>,
    pub email_verified: Option<bool>,
}

/// Change a user's profile (and `updated_at`); `None` if there is no such user. A new email is
/// unverified unless the change says otherwise.
pub async fn update_profile(pool: &PgPool, username: &str, c: &ProfileChange<'_>) -> Result<Option<Uuid>, sqlx::Error> {
    let email_changes = c.email.is_some();
    sqlx::query_scalar!(
        "UPDATE users SET
             email = CASE WHEN $2 THEN $3 ELSE email END,
             name = CASE WHEN $4 THEN $5 ELSE name END,
             email_verified = coalesce($6, CASE WHEN $2 THEN false ELSE email_verified END),
             updated_at = now()
         WHERE lower(username) = lower($1) RETURNING id",
        username,
        email_changes,
        c.email.flatten(),
        c.name.is_some(),
        c.name.flatten(),
        c.email_verified
    )
    .fetch_optional(pool)
    .await
}

/// What a credential change ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    pub sessions: u64,
    pub grants: u64,
}

/// Set a new password. The account's browser sessions end (deleted, and their generation
/// voided), and unless `keep_grants`, every grant is revoked: refresh tokens stop at once and
/// access tokens turn inactive at introspection. `None` if there is no such user.
pub async fn set_password(
    pool: &PgPool,
    username: &str,
    password_hash: &str,
    keep_grants: bool,
) -> Result<Option<(Uuid, Evicted)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id = sqlx::query_scalar!(
        "UPDATE users SET password_hash = $2, invited = false, session_generation = session_generation + 1, updated_at = now()
         WHERE lower(username) = lower($1) RETURNING id",
        username,
        password_hash
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else { return Ok(None) };
    let sessions = super::sessions::delete_user_sessions(&mut tx, id).await?;
    let grants =
        if keep_grants { 0 } else { super::grants::revoke_user_grants(&mut tx, id, "password_changed").await? };
    tx.commit().await?;
    Ok(Some((id, Evicted { sessions, grants })))
}

/// Disable (or re-enable) an account. Disabling deletes its browser sessions (re-enabling does
/// not bring them back) and revokes every grant, so refresh tokens stop working and access
/// tokens turn inactive at introspection. `None` if there is no such user.
pub async fn set_disabled(pool: &PgPool, username: &str, disabled: bool) -> Result<Option<Evicted>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id = sqlx::query_scalar!(
        "UPDATE users SET disabled = $2, updated_at = now(),
             session_generation = session_generation + CASE WHEN $2 THEN 1 ELSE 0 END
         WHERE lower(username) = lower($1) RETURNING id",
        username,
        disabled
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else { return Ok(None) };
    let mut evicted = Evicted::default();
    if disabled {
        evicted.sessions = super::sessions::delete_user_sessions(&mut tx, id).await?;
        evicted.grants = super::grants::revoke_user_grants(&mut tx, id, "user_disabled").await?;
    }
    tx.commit().await?;
    Ok(Some(evicted))
}
