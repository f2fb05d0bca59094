//! What makes a token inactive: the access-token deny list, and the grants and clients that
//! still stand. (Revoking a grant lives in `grants`.)

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Channel on which a trigger announces a revoked access token (payload: `jti exp`).
pub const CHANNEL: &str = "tessera_revoked_tokens";

/// Put an access token's `jti` on the deny list until it would expire anyway.
pub async fn revoke_jti(pool: &PgPool, jti: &str, expires_at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        jti,
        expires_at
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// [`revoke_jti`] for many in one statement (one commit).
pub async fn revoke_jtis(pool: &PgPool, jtis: &[String], expires_at: &[DateTime<Utc>]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO revoked_tokens (jti, expires_at) SELECT * FROM unnest($1::text[], $2::timestamptz[])
         ON CONFLICT (jti) DO NOTHING",
        jtis,
        expires_at
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Every revoked `jti` unexpired or expired less than `leeway_seconds` ago, with its expiry
/// (Unix seconds).
pub async fn revoked_jtis(pool: &PgPool, leeway_seconds: f64) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT jti, floor(extract(epoch FROM expires_at))::bigint AS "exp!" FROM revoked_tokens
           WHERE expires_at > now() - make_interval(secs => $1)"#,
        leeway_seconds
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.jti, r.exp)).collect())
}

pub async fn is_jti_revoked(pool: &PgPool, jti: &str) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(r#"SELECT true AS "found!" FROM revoked_tokens WHERE jti = $1"#, jti)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// Whether a grant exists and is not revoked.
pub async fn grant_standing(pool: &PgPool, grant_id: Uuid) -> Result<bool, sqlx::Error> {
    let standing =
        sqlx::query_scalar!(r#"SELECT revoked_at IS NULL AS "standing!" FROM grants WHERE id = $1"#, grant_id)
            .fetch_optional(pool)
            .await?;
    Ok(standing.unwrap_or(false))
}

pub async fn client_exists(pool: &PgPool, client_id: &str) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(r#"SELECT true AS "found!" FROM clients WHERE client_id = $1"#, client_id)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// Delete at most `limit` revoked tokens that expired over an hour ago; how many went.
pub async fn prune(conn: &mut sqlx::PgConnection, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM revoked_tokens WHERE ctid = ANY(ARRAY(
           SELECT ctid FROM revoked_tokens WHERE expires_at < now() - interval '1 hour' LIMIT $1))",
        limit
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
