//! The `users` table: local accounts.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// Find a user by name, ignoring case.
pub async fn by_username(pool: &PgPool, username: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "SELECT id, username, email, password_hash, disabled, created_at FROM users WHERE lower(username) = lower($1)",
        username
    )
    .fetch_optional(pool)
    .await
}

pub async fn by_id(pool: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "SELECT id, username, email, password_hash, disabled, created_at FROM users WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await
}

pub async fn list(pool: &PgPool) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "SELECT id, username, email, password_hash, disabled, created_at FROM users ORDER BY lower(username)"
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
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO users (id, username, email, password_hash) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        id,
        username,
        email,
        password_hash
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_password(pool: &PgPool, username: &str, password_hash: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE lower(username) = lower($1)",
        username,
        password_hash
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Disable (or re-enable) an account. Disabling also revokes every grant of the user, so
/// refresh tokens stop working and access tokens turn inactive at introspection.
pub async fn set_disabled(pool: &PgPool, username: &str, disabled: bool) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id = sqlx::query_scalar!(
        "UPDATE users SET disabled = $2, updated_at = now() WHERE lower(username) = lower($1) RETURNING id",
        username,
        disabled
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else { return Ok(false) };
    if disabled {
        super::grants::revoke_user_grants(&mut tx, id, "user_disabled").await?;
    }
    tx.commit().await?;
    Ok(true)
}
