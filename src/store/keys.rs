//! The `signing_keys` table.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Channel on which a rotation is announced to every instance.
pub const CHANNEL: &str = "tessera_keys";

pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    pub public_jwk: serde_json::Value,
    pub private_key_enc: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub activates_at: DateTime<Utc>,
}

pub async fn list(pool: &PgPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as!(
        KeyRow,
        "SELECT kid, alg, public_jwk, private_key_enc, created_at, activates_at FROM signing_keys ORDER BY activates_at, kid"
    )
    .fetch_all(pool)
    .await
}

/// Store a new key that starts signing at `activates_at`, and tell every instance to reload.
pub async fn insert(pool: &PgPool, key: &NewKeyRow, activates_at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO signing_keys (kid, alg, public_jwk, private_key_enc, activates_at) VALUES ($1, $2, $3, $4, $5)",
        key.kid,
        key.alg,
        key.public_jwk,
        key.private_key_enc,
        activates_at
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, key.kid).execute(&mut *tx).await?;
    tx.commit().await
}

/// A key to store: its id, algorithm, public JWK and encrypted private key.
pub struct NewKeyRow {
    pub kid: String,
    pub alg: &'static str,
    pub public_jwk: serde_json::Value,
    pub private_key_enc: Vec<u8>,
}

/// Create the first key of `alg` if there is none. Instances that start together serialize on an
/// advisory lock, so exactly one key is created.
pub async fn ensure_initial_key<E>(
    pool: &PgPool,
    alg: &str,
    generate: impl FnOnce() -> Result<NewKeyRow, E>,
) -> Result<(), E>
where
    E: From<sqlx::Error>,
{
    let exists = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM signing_keys WHERE alg = $1) AS "exists!""#, alg)
        .fetch_one(pool)
        .await?;
    if exists {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('tessera.signing_keys'))").execute(&mut *tx).await?;
    let exists = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM signing_keys WHERE alg = $1) AS "exists!""#, alg)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        let key = generate()?;
        sqlx::query!(
            "INSERT INTO signing_keys (kid, alg, public_jwk, private_key_enc, activates_at) VALUES ($1, $2, $3, $4, now())",
            key.kid,
            key.alg,
            key.public_jwk,
            key.private_key_enc
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
