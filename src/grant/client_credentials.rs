//! `grant_type=client_credentials` (RFC 6749 §4.4): a confidential client acting for itself,
//! for one resource it is allowed. No refresh token; `sub` is the client id.

use super::Issued;
use crate::clients::Client;
use crate::error::ApiError;
use crate::http::authorize::{requested_scopes, resolve_resource};
use crate::oauth::params::Params;
use crate::oauth::{ErrorCode, OAuthError};
use crate::state::AppState;
use crate::tokens;

pub async fn exchange(state: &AppState, client: &Client, params: &Params) -> Result<Issued, ApiError> {
    if client.secret_hash.is_none() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "client_credentials requires a confidential client",
        )
        .into());
    }
    let requested = params.get("resource").map(str::to_owned).or_else(|| only_allowed_resource(state, client));
    let resource = resolve_resource(state, client, requested.as_deref())?;
    let scopes = requested_scopes(&resource, params.get("scope"), false)?;
    let access = tokens::mint(state, &client.client_id, &client.client_id, &resource, &scopes, None)?;
    Ok(Issued { access, refresh: None, scopes })
}

/// A client allowed exactly one resource gets it without naming it.
fn only_allowed_resource(state: &AppState, client: &Client) -> Option<String> {
    match client.allowed_resources.as_slice() {
        [only] => state.resources.load().by_id(*only).map(|r| r.uri.clone()),
        _ => None,
    }
}
