//! The token endpoint's grant types, one file each. Each checks its grant against the store,
//! then mints an access token (and a refresh token where the client may refresh).

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use crate::clients::Client;
use crate::error::ApiError;
use crate::oauth::secret::Secret;
use crate::tokens::Minted;

/// What a successful grant hands to the client.
pub struct Issued {
    pub access: Minted,
    pub refresh: Option<Secret>,
    pub scopes: Vec<String>,
}

/// Whether this client gets refresh tokens: it registered the `refresh_token` grant type.
pub fn may_refresh(client: &Client) -> bool {
    client.has_grant("refresh_token")
}

/// A required parameter.
pub fn required<'a>(params: &'a crate::oauth::params::Params, name: &str) -> Result<&'a str, ApiError> {
    params.get(name).ok_or_else(|| crate::oauth::OAuthError::invalid_request(format!("{name} is required")).into())
}
