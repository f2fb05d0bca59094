//! The `clients` table: operator-registered, self-registered (RFC 7591) and metadata-document
//! clients (cached rows, refreshed when the document expires).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Channel on which a trigger announces every inserted, changed or deleted client (payload: its id).
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
    /// Registration metadata kept as sent (client_uri, logo_uri, contacts, scope, ...).
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub registration_token_hash: Option<Vec<u8>>,
    pub first_authorized_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub document_expires_at: Option<DateTime<Utc>>,
}

impl Client {
    /// A client with the defaults of an operator-registered one.
    pub fn new(client_id: String, client_name: String, origin: &str) -> Self {
        Self {
            client_id,
            client_name,
            origin: origin.to_owned(),
            token_endpoint_auth_method: "none".into(),
            secret_hash: None,
            redirect_uris: Vec::new(),
            grant_types: Vec::new(),
            allowed_resources: Vec::new(),
            metadata: serde_json::json!({}),
            created_at: Utc::now(),
            registration_token_hash: None,
            first_authorized_at: None,
            last_used_at: None,
            document_expires_at: None,
        }
    }

    pub fn has_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }

    pub fn may_use_resource(&self, resource: Uuid) -> bool {
        self.allowed_resources.is_empty() || self.allowed_resources.contains(&resource)
    }

    /// Clients that registered themselves (or that a document describes) are shown as unverified.
    pub fn is_self_registered(&self) -> bool {
        self.origin != "admin"
    }
}

pub async fn get(pool: &PgPool, client_id: &str) -> Result<Option<Client>, sqlx::Error> {
    sqlx::query_as!(
        Client,
        "SELECT client_id, client_name, origin, token_endpoint_auth_method, secret_hash, redirect_uris, grant_types,
                allowed_resources, metadata, created_at, registration_token_hash, first_authorized_at, last_used_at,
                document_expires_at
         FROM clients WHERE client_id = $1",
        client_id
    )
    .fetch_optional(pool)
    .await
}

pub async fn list(pool: &PgPool) -> Result<Vec<Client>, sqlx::Error> {
    sqlx::query_as!(
        Client,
        "SELECT client_id, client_name, origin, token_endpoint_auth_method, secret_hash, redirect_uris, grant_types,
                allowed_resources, metadata, created_at, registration_token_hash, first_authorized_at, last_used_at,
                document_expires_at
         FROM clients ORDER BY created_at, client_id"
    )
    .fetch_all(pool)
    .await
}

pub async fn insert(pool: &PgPool, c: &Client) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO clients (client_id, client_name, origin, token_endpoint_auth_method, secret_hash, redirect_uris,
                              grant_types, allowed_resources, metadata, created_at, updated_at, registration_token_hash,
                              document_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12)",
        c.client_id,
        c.client_name,
        c.origin,
        c.token_endpoint_auth_method,
        c.secret_hash,
        &c.redirect_uris,
        &c.grant_types,
        &c.allowed_resources,
        c.metadata,
        c.created_at,
        c.registration_token_hash,
        c.document_expires_at
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Replace a self-registered client's metadata (RFC 7592 update).
pub async fn update_metadata(pool: &PgPool, c: &Client) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE clients SET client_name = $2, redirect_uris = $3, grant_types = $4, metadata = $5, updated_at = now()
         WHERE client_id = $1",
        c.client_id,
        c.client_name,
        &c.redirect_uris,
        &c.grant_types,
        c.metadata
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Store (or refresh) the row of a client described by a metadata document.
pub async fn upsert_document_client(pool: &PgPool, c: &Client) -> Result<Client, sqlx::Error> {
    sqlx::query_as!(
        Client,
        "INSERT INTO clients (client_id, client_name, origin, token_endpoint_auth_method, redirect_uris, grant_types,
                              metadata, document_expires_at)
         VALUES ($1, $2, 'cimd', 'none', $3, $4, $5, $6)
         ON CONFLICT (client_id) DO UPDATE
         SET client_name = EXCLUDED.client_name, redirect_uris = EXCLUDED.redirect_uris,
             grant_types = EXCLUDED.grant_types, metadata = EXCLUDED.metadata,
             document_expires_at = EXCLUDED.document_expires_at, updated_at = now()
         WHERE clients.origin = 'cimd'
         RETURNING client_id, client_name, origin, token_endpoint_auth_method, secret_hash, redirect_uris, grant_types,
                   allowed_resources, metadata, created_at, registration_token_hash, first_authorized_at, last_used_at,
                   document_expires_at",
        c.client_id,
        c.client_name,
        &c.redirect_uris,
        &c.grant_types,
        c.metadata,
        c.document_expires_at
    )
    .fetch_one(pool)
    .await
}

/// Delete a client (its grants, consents and tokens go with it).
pub async fn delete(pool: &PgPool, client_id: &str) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query!("DELETE FROM clients WHERE client_id = $1", client_id).execute(pool).await?;
    Ok(deleted.rows_affected() > 0)
}

/// Record that a client completed an authorization (first time only).
pub async fn mark_authorized(pool: &PgPool, client_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE clients SET first_authorized_at = now(), last_used_at = now()
         WHERE client_id = $1 AND first_authorized_at IS NULL",
        client_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Record that a client obtained a token.
pub async fn mark_used(pool: &PgPool, client_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE clients SET last_used_at = now() WHERE client_id = $1", client_id).execute(pool).await?;
    Ok(())
}

/// Delete self-registered clients that never completed an authorization within
/// `never_authorized_secs` of registering, and self-registered or document clients unused for
/// `idle_secs`, at most `limit` of them. Returns the ids deleted and why.
pub async fn delete_stale(
    conn: &mut sqlx::PgConnection,
    never_authorized_secs: f64,
    idle_secs: f64,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let deleted = sqlx::query!(
        r#"DELETE FROM clients WHERE client_id = ANY(ARRAY(
             SELECT client_id FROM clients
             WHERE (origin = 'dcr' AND first_authorized_at IS NULL AND created_at < now() - make_interval(secs => $1))
                OR (origin IN ('dcr', 'cimd')
                    AND coalesce(last_used_at, first_authorized_at, created_at) < now() - make_interval(secs => $2))
             LIMIT $3))
           RETURNING client_id, CASE WHEN first_authorized_at IS NULL AND origin = 'dcr' THEN 'never_authorized'
                                     ELSE 'unused' END AS "reason!""#,
        never_authorized_secs,
        idle_secs,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(deleted.into_iter().map(|r| (r.client_id, r.reason)).collect())
}
