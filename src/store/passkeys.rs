//! Passkeys: a user's WebAuthn credentials (the library's serialized `Passkey`: public key and
//! signature counter), found by credential id at sign-in.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub struct StoredPasskey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub credential: serde_json::Value,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Add a passkey; `false` if its credential id is registered already (to anyone).
pub async fn insert(
    pool: &PgPool,
    user_id: Uuid,
    credential_id: &[u8],
    credential: &serde_json::Value,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO passkeys (id, user_id, credential_id, credential, name) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (credential_id) DO NOTHING",
        Uuid::new_v4(),
        user_id,
        credential_id,
        credential,
        name
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn for_user(pool: &PgPool, user_id: Uuid) -> Result<Vec<StoredPasskey>, sqlx::Error> {
    sqlx::query_as!(
        StoredPasskey,
        "SELECT id, user_id, credential, name, created_at, last_used_at FROM passkeys WHERE user_id = $1
         ORDER BY created_at LIMIT 100",
        user_id
    )
    .fetch_all(pool)
    .await
}

pub async fn by_credential_id(pool: &PgPool, credential_id: &[u8]) -> Result<Option<StoredPasskey>, sqlx::Error> {
    sqlx::query_as!(
        StoredPasskey,
        "SELECT id, user_id, credential, name, created_at, last_used_at FROM passkeys WHERE credential_id = $1",
        credential_id
    )
    .fetch_optional(pool)
    .await
}

/// After a sign-in: the credential as updated (its counter), and when it was used.
pub async fn used(pool: &PgPool, id: Uuid, credential: &serde_json::Value) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE passkeys SET credential = $2, last_used_at = now() WHERE id = $1", id, credential)
        .execute(pool)
        .await?;
    Ok(())
}

/// Remove one of the user's passkeys; whether there was one.
pub async fn delete(pool: &PgPool, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM passkeys WHERE user_id = $1 AND id = $2", user_id, id).execute(pool).await?;
    Ok(done.rows_affected() == 1)
}

/// Remove every passkey of the user (an administrator's reset). How many.
pub async fn delete_all(pool: &PgPool, user_id: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!("DELETE FROM passkeys WHERE user_id = $1", user_id).execute(pool).await?.rows_affected())
}
