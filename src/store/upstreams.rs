//! The `upstreams` table: identity providers people may sign in through (client secrets sealed
//! under the master key by the caller).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    /// `oidc` or `github`.
    pub kind: String,
    pub issuer: String,
    pub api_url: Option<String>,
    pub client_id: String,
    pub client_secret_enc: Vec<u8>,
    pub scopes: Vec<String>,
    pub button: String,
    pub allowed_domains: Vec<String>,
    pub allowed_emails: Vec<String>,
    pub required_groups: Vec<String>,
    /// `jit` or `invite`.
    pub accounts: String,
    pub link_existing: bool,
    pub allow_private_network: bool,
    pub created_at: DateTime<Utc>,
}

/// Insert a provider; `false` if the name is taken.
pub async fn insert(pool: &PgPool, u: &Upstream) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO upstreams (name, kind, issuer, api_url, client_id, client_secret_enc, scopes, button,
             allowed_domains, allowed_emails, required_groups, accounts, link_existing, allow_private_network)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING",
        u.name,
        u.kind,
        u.issuer,
        u.api_url,
        u.client_id,
        u.client_secret_enc,
        &u.scopes,
        u.button,
        &u.allowed_domains,
        &u.allowed_emails,
        &u.required_groups,
        u.accounts,
        u.link_existing,
        u.allow_private_network
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get(pool: &PgPool, name: &str) -> Result<Option<Upstream>, sqlx::Error> {
    sqlx::query_as!(Upstream, "SELECT * FROM upstreams WHERE name = $1", name).fetch_optional(pool).await
}

pub async fn list(pool: &PgPool) -> Result<Vec<Upstream>, sqlx::Error> {
    sqlx::query_as!(Upstream, "SELECT * FROM upstreams ORDER BY created_at, name").fetch_all(pool).await
}

/// The sign-in buttons: (name, label), in the order the providers were added.
pub async fn buttons(pool: &PgPool) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query!("SELECT name, button FROM upstreams ORDER BY created_at, name").fetch_all(pool).await?;
    Ok(rows.into_iter().map(|r| (r.name, r.button)).collect())
}

/// Delete a provider and the identities linked through it; `false` if there was none.
pub async fn delete(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM upstreams WHERE name = $1", name).execute(pool).await?;
    Ok(done.rows_affected() == 1)
}
