//! `grant_type=client_credentials` (RFC 6749 §4.4): a confidential client acting for itself,
//! for one resource it is allowed. No refresh token; `sub` is the client id.

use super::{Context, GrantError, Issued};
use crate::catalog::resources::requested_scopes;
use crate::clients::Client;
use crate::oauth::params::Params;
use crate::oauth::{ErrorCode, OAuthError};
use crate::tokens::{self, Grantee};

pub async fn exchange(cx: &Context<'_>, client: &Client, params: &Params) -> Result<Issued, GrantError> {
    if client.secret_hash.is_none() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "client_credentials requires a confidential client",
        )
        .into());
    }
    let requested = params.get("resource").map(str::to_owned).or_else(|| only_allowed_resource(cx, client));
    let resource = cx.resources.resolve(client, requested.as_deref(), false)?;
    if cx.resources.is_userinfo(&resource) {
        return Err(OAuthError::invalid_target("the userinfo endpoint takes tokens issued for a user only").into());
    }
    let scopes = requested_scopes(&resource, params.get("scope"), false)?;
    let to = Grantee {
        sub: &client.client_id,
        client_id: &client.client_id,
        resource: &resource,
        scopes: &scopes,
        grant: None,
    };
    let access = tokens::mint(cx.keys, cx.issuer, to)?;
    Ok(Issued { access, refresh: None, scopes, id_token: None })
}

/// A client allowed exactly one resource gets it without naming it.
fn only_allowed_resource(cx: &Context<'_>, client: &Client) -> Option<String> {
    match client.allowed_resources.as_slice() {
        [only] => cx.resources.by_id(*only).map(|r| r.uri.clone()),
        _ => None,
    }
}
