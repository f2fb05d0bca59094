//! The `clients` table.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Channel announcing that a client changed or was deleted (payload: the client id).
pub const CHANNEL: &str = "tessera_clients";

#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: String,
    pub client_name: String,
    /// `admin`, `dcr` or `cimd`.
    pub origin: String,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub token_endpoint_auth_method: String,
    pub secret_hash: Option<Vec<u8>>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// Resources this client may get tokens for; empty means any.
    pub allowed_resources: Vec<Uuid>,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl Client {
    pub fn has_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }

    pub fn may_use_resource(&self, resource: Uuid) -> bool {
        self.allowed_resources.is_empty() || self.allowed_resources.contains(&resource)
    }

    /// Clients that registered themselves are shown as unverified.
    pub fn is_self_registered(&self) -> bool {
        self.origin != "admin"
    }
}

pub async fn get(pool: &PgPool, client_id: &str) -> Result<Option<Client>, sqlx::Error> {
    sqlx::query_as!(
        Client,
        "SELECT client_id, client_name, origin, token_endpoint_auth_method, secret_hash, redirect_uris,
                grant_types, allowed_resources, metadata, created_at
         FROM clients WHERE client_id = $1",
        client_id
    )
    .fetch_optional(pool)
    .await
}

pub async fn list(pool: &PgPool) -> Result<Vec<Client>, sqlx::Error> {
    sqlx::query_as!(
        Client,
        "SELECT client_id, client_name, origin, token_endpoint_auth_method, secret_hash, redirect_uris,
                grant_types, allowed_resources, metadata, created_at
         FROM clients ORDER BY created_at, client_id"
    )
    .fetch_all(pool)
    .await
}

pub async fn insert(pool: &PgPool, c: &Client) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO clients (client_id, client_name, origin, token_endpoint_auth_method, secret_hash, redirect_uris,
                              grant_types, allowed_resources, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        c.client_id,
        c.client_name,
        c.origin,
        c.token_endpoint_auth_method,
        c.secret_hash,
        &c.redirect_uris,
        &c.grant_types,
        &c.allowed_resources,
        c.metadata,
        c.created_at
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Delete a client (its grants, consents and tokens go with it) and announce it.
pub async fn delete(pool: &PgPool, client_id: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query!("DELETE FROM clients WHERE client_id = $1", client_id).execute(&mut *tx).await?;
    sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, client_id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(deleted.rows_affected() > 0)
}
