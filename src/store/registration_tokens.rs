//! The `registration_tokens` table: initial access tokens for `TESSERA_REGISTRATION=token`.

use sqlx::PgPool;

pub async fn insert(
    pool: &PgPool,
    token_hash: &[u8],
    note: Option<&str>,
    ttl_secs: f64,
    uses: Option<i32>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO registration_tokens (token_hash, note, expires_at, uses_left)
         VALUES ($1, $2, now() + make_interval(secs => $3), $4)",
        token_hash,
        note,
        ttl_secs,
        uses
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Use an initial access token once: `true` if it exists, has not expired and has uses left.
pub async fn consume(pool: &PgPool, token_hash: &[u8]) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE registration_tokens SET uses_left = uses_left - 1
         WHERE token_hash = $1 AND expires_at > now() AND (uses_left IS NULL OR uses_left > 0)",
        token_hash
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
