//! The `federated_identities` table: an upstream account, keyed on (provider, upstream subject),
//! linked to one local account.

use sqlx::PgConnection;
use uuid::Uuid;

/// The local account an upstream identity is linked to, noting this login.
pub async fn touch(
    conn: &mut PgConnection,
    upstream: &str,
    subject: &str,
    email: Option<&str>,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "UPDATE federated_identities SET last_login_at = now(), email = $3
         WHERE upstream = $1 AND subject = $2 RETURNING user_id",
        upstream,
        subject,
        email
    )
    .fetch_optional(conn)
    .await
}

/// Link an upstream identity to a local account; `false` if it is already linked (to anyone).
pub async fn link(
    conn: &mut PgConnection,
    upstream: &str,
    subject: &str,
    user_id: Uuid,
    email: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO federated_identities (upstream, subject, user_id, email) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        upstream,
        subject,
        user_id,
        email
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
