//! Second factors: a user's TOTP secret (sealed by the caller) with the last step accepted, and
//! their recovery codes as SHA-256 digests. Single use is one conditional `UPDATE` each.

use sqlx::PgPool;
use uuid::Uuid;

/// A user's TOTP credential: the sealed secret and the last step accepted.
pub struct Totp {
    pub secret_enc: Vec<u8>,
    pub last_step: i64,
}

pub async fn totp(pool: &PgPool, user_id: Uuid) -> Result<Option<Totp>, sqlx::Error> {
    sqlx::query_as!(Totp, "SELECT secret_enc, last_step FROM totp_credentials WHERE user_id = $1", user_id)
        .fetch_optional(pool)
        .await
}

/// Whether the user has a second factor.
pub async fn has_totp(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!("SELECT 1 AS one FROM totp_credentials WHERE user_id = $1", user_id)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// Store a confirmed TOTP secret (replacing any) with `step`, the step of the code that
/// confirmed it, and new recovery codes (replacing any).
pub async fn enable_totp(
    pool: &PgPool,
    user_id: Uuid,
    secret_enc: &[u8],
    step: i64,
    recovery_hashes: &[Vec<u8>],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO totp_credentials (user_id, secret_enc, last_step) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET secret_enc = EXCLUDED.secret_enc, last_step = EXCLUDED.last_step,
                                             created_at = now()",
        user_id,
        secret_enc,
        step
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM recovery_codes WHERE user_id = $1", user_id).execute(&mut *tx).await?;
    sqlx::query!(
        "INSERT INTO recovery_codes (user_id, code_hash) SELECT $1, h FROM unnest($2::bytea[]) AS h",
        user_id,
        recovery_hashes
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Accept `step` if it is later than the last one accepted (one statement: two requests with
/// the same code cannot both pass).
pub async fn accept_step(pool: &PgPool, user_id: Uuid, step: i64) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query!("UPDATE totp_credentials SET last_step = $2 WHERE user_id = $1 AND last_step < $2", user_id, step)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Use a recovery code: `true` if it was the user's and unused.
pub async fn use_recovery_code(pool: &PgPool, user_id: Uuid, code_hash: &[u8]) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE recovery_codes SET used_at = now() WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        user_id,
        code_hash
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Recovery codes the user has left.
pub async fn recovery_codes_left(pool: &PgPool, user_id: Uuid) -> Result<i64, sqlx::Error> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL"#,
        user_id
    )
    .fetch_one(pool)
    .await?;
    Ok(n)
}

/// Remove the user's second factors (they turned it off, or an administrator reset it).
/// Whether there was one.
pub async fn remove(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query!("DELETE FROM totp_credentials WHERE user_id = $1", user_id).execute(&mut *tx).await?;
    sqlx::query!("DELETE FROM recovery_codes WHERE user_id = $1", user_id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(removed.rows_affected() > 0)
}
