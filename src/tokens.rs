//! Access tokens: JWTs per RFC 9068 (`typ: at+jwt`, ES256), bound to exactly one resource.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::oauth::{scope, secret};
use crate::resources::Resource;
use crate::state::AppState;

/// The claims of every access token Tessera issues.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// The user id, or the client id for `client_credentials`.
    pub sub: String,
    /// The one resource URI, as a string.
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The grant the token came from (absent for `client_credentials`), so introspection can
    /// tell when it was revoked.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gid: Option<Uuid>,
}

/// A signed access token and its lifetime in seconds.
pub struct Minted {
    pub token: String,
    pub expires_in: u64,
    pub claims: AccessClaims,
}

/// Sign an access token for `resource`.
pub fn mint(
    state: &AppState,
    sub: &str,
    client_id: &str,
    resource: &Resource,
    scopes: &[String],
    gid: Option<Uuid>,
) -> Result<Minted, ApiError> {
    let now = chrono::Utc::now().timestamp();
    let ttl = resource.token_ttl.as_secs();
    let claims = AccessClaims {
        iss: state.settings.issuer.as_str().to_owned(),
        sub: sub.to_owned(),
        aud: resource.uri.clone(),
        client_id: client_id.to_owned(),
        scope: scope::join(scopes),
        iat: now,
        exp: now + i64::try_from(ttl).unwrap_or(600),
        jti: secret::new_jti(),
        gid,
    };
    let key = state.keys.signing_key().map_err(ApiError::internal)?;
    let token = key.sign_access_token(&claims).map_err(ApiError::internal)?;
    Ok(Minted { token, expires_in: ttl, claims })
}
