//! The `resources` table: the MCP servers Tessera issues tokens for.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// Channel announcing that the resources changed.
pub const CHANNEL: &str = "tessera_resources";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub id: Uuid,
    /// Canonical URI (RFC 8707): the `aud` of its tokens.
    pub uri: String,
    pub name: String,
    /// Scope name -> description shown on the consent page.
    pub scopes: BTreeMap<String, String>,
    pub default_scopes: Vec<String>,
    pub token_ttl: Duration,
    pub is_default: bool,
    /// The id the resource server authenticates to introspection with, and its secret's SHA-256.
    pub credential_id: Option<String>,
    pub credential_secret_hash: Option<Vec<u8>>,
    /// What the consent page says beyond a scope's description (`tessera resource scope`).
    pub scope_details: BTreeMap<String, ScopeDetails>,
}

/// More about one scope of a resource, for the consent page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeDetails {
    /// A longer explanation, shown under the description.
    pub details: Option<String>,
    /// The tools the scope unlocks.
    pub tools: Vec<String>,
    /// The person cannot leave it unchecked on the consent page.
    pub required: bool,
}

struct Row {
    id: Uuid,
    uri: String,
    name: String,
    scopes: serde_json::Value,
    default_scopes: Vec<String>,
    token_ttl_seconds: i32,
    is_default: bool,
    credential_id: Option<String>,
    credential_secret_hash: Option<Vec<u8>>,
}

impl From<Row> for Resource {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            uri: r.uri,
            name: r.name,
            scopes: serde_json::from_value(r.scopes).unwrap_or_default(),
            default_scopes: r.default_scopes,
            token_ttl: Duration::from_secs(u64::try_from(r.token_ttl_seconds).unwrap_or(600)),
            is_default: r.is_default,
            credential_id: r.credential_id,
            credential_secret_hash: r.credential_secret_hash,
            scope_details: BTreeMap::new(),
        }
    }
}

pub async fn list(pool: &PgPool) -> Result<Vec<Resource>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        "SELECT id, uri, name, scopes, default_scopes, token_ttl_seconds, is_default, credential_id, credential_secret_hash
         FROM resources ORDER BY uri"
    )
    .fetch_all(pool)
    .await?;
    let mut resources: Vec<Resource> = rows.into_iter().map(Resource::from).collect();
    let details = sqlx::query!("SELECT resource_id, scope, details, tools, required FROM resource_scopes")
        .fetch_all(pool)
        .await?;
    for d in details {
        if let Some(r) = resources.iter_mut().find(|r| r.id == d.resource_id) {
            r.scope_details.insert(d.scope, ScopeDetails { details: d.details, tools: d.tools, required: d.required });
        }
    }
    Ok(resources)
}

/// Describe a scope of the resource at `uri`: its one-line description (adding the scope when
/// `description` is given and it is new), and what the consent page says beyond it. `false` if
/// there is no such resource, or the scope is new and no description was given.
pub async fn set_scope(
    pool: &PgPool,
    uri: &str,
    scope: &str,
    description: Option<&str>,
    details: &ScopeDetails,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query_scalar!(
        "UPDATE resources SET scopes = CASE WHEN $3::text IS NULL THEN scopes ELSE scopes || jsonb_build_object($2::text, $3::text) END
         WHERE uri = $1 AND ($3::text IS NOT NULL OR scopes ? $2) RETURNING id",
        uri,
        scope,
        description
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(resource_id) = updated else { return Ok(false) };
    sqlx::query!(
        "INSERT INTO resource_scopes (resource_id, scope, details, tools, required) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (resource_id, scope) DO UPDATE
         SET details = EXCLUDED.details, tools = EXCLUDED.tools, required = EXCLUDED.required",
        resource_id,
        scope,
        details.details,
        &details.tools,
        details.required
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("SELECT pg_notify($1, '')", CHANNEL).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("a resource with this URI already exists")]
    Duplicate,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Register a resource (making it the only default when `is_default`), and announce it.
pub async fn add(pool: &PgPool, r: &Resource) -> Result<(), AddError> {
    let mut tx = pool.begin().await?;
    if r.is_default {
        sqlx::query!("UPDATE resources SET is_default = false WHERE is_default").execute(&mut *tx).await?;
    }
    let scopes = serde_json::to_value(&r.scopes).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let ttl = i32::try_from(r.token_ttl.as_secs()).unwrap_or(i32::MAX);
    let inserted = sqlx::query!(
        "INSERT INTO resources (id, uri, name, scopes, default_scopes, token_ttl_seconds, is_default, credential_id,
                                credential_secret_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (uri) DO NOTHING",
        r.id,
        r.uri,
        r.name,
        scopes,
        &r.default_scopes,
        ttl,
        r.is_default,
        r.credential_id,
        r.credential_secret_hash
    )
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(AddError::Duplicate);
    }
    sqlx::query!("SELECT pg_notify($1, '')", CHANNEL).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Replace a resource's introspection credentials; `false` if there is no such resource.
pub async fn set_credentials(
    pool: &PgPool,
    uri: &str,
    credential_id: &str,
    secret_hash: &[u8],
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query!(
        "UPDATE resources SET credential_id = $2, credential_secret_hash = $3 WHERE uri = $1",
        uri,
        credential_id,
        secret_hash
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("SELECT pg_notify($1, '')", CHANNEL).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// Remove a resource; its grants, codes and refresh tokens go with it.
pub async fn remove(pool: &PgPool, uri: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query!("DELETE FROM resources WHERE uri = $1", uri).execute(&mut *tx).await?;
    sqlx::query!("SELECT pg_notify($1, '')", CHANNEL).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(removed.rows_affected() > 0)
}
