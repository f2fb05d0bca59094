//! The code grant's front half, the authorization request ([`authorization`]), and the token
//! endpoint's grant types, one file each: check the grant against the store, then
//! mint an access token (and a refresh token where the client may refresh).
//! Domain layer: takes a [`Context`] of parts and answers a [`GrantError`]; imports the domain,
//! `oauth/` and `store/`, never `http` or `state` (`http/token.rs` turns the error into an answer).

pub mod authorization;
pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use std::time::Duration;

use sqlx::PgPool;

use crate::catalog::resources::ResourceSet;
use crate::clients::Client;
use crate::config::Issuer;
use crate::oauth::OAuthError;
use crate::oauth::params::Params;
use crate::oauth::secret::Secret;
use crate::platform::audit::{AuditSink, RequestMeta};
use crate::tokens::Minted;
use crate::tokens::keys::{KeyError, KeyRing};
use crate::tokens::revocation::Revocation;

/// What the grants need from the server, for one request.
pub struct Context<'a> {
    pub pool: &'a PgPool,
    pub keys: &'a KeyRing,
    pub issuer: &'a Issuer,
    pub resources: &'a ResourceSet,
    pub revocation: &'a Revocation,
    pub audit: &'a AuditSink,
    pub refresh: RefreshLifetimes,
    /// Derives refresh tokens' successors; holds the reuse grace window.
    pub successors: &'a refresh_token::Successors,
    /// Rotates refresh tokens in batches.
    pub rotations: &'a refresh_token::Rotations,
    /// The request the grant is made in (for audit records).
    pub meta: &'a RequestMeta,
}

/// How long refresh tokens live.
#[derive(Clone, Copy, Debug)]
pub struct RefreshLifetimes {
    /// Unused this long, a refresh token expires (each rotation starts a new period).
    pub idle: Duration,
    /// No refresh token of a grant outlives this after the first approval.
    pub max: Duration,
}

/// Why a grant failed: the client's error (RFC 6749 §5.2), or ours.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Signing(#[from] KeyError),
}

/// What a successful grant hands to the client.
pub struct Issued {
    pub access: Minted,
    pub refresh: Option<Secret>,
    pub scopes: Vec<String>,
    /// For a grant with the `openid` scope (OpenID Connect).
    pub id_token: Option<String>,
}

/// The ID token that goes with `access` for a user's grant with the `openid` scope (its claims
/// follow the grant's scopes), still to be signed; `None` for other grants. `user` is the
/// grant's user, read with the grant (`None`: deleted since, which fails an OpenID grant).
pub fn id_token_for(
    cx: &Context<'_>,
    client: &Client,
    user: Option<&crate::store::profile::Profile>,
    grant_scopes: &[String],
    access: &Minted,
    sign_in: crate::openid::SignIn<'_>,
) -> Result<Option<crate::openid::Unsigned>, GrantError> {
    if !crate::openid::is_openid(grant_scopes) {
        return Ok(None);
    }
    let Some(user) = user else {
        return Err(OAuthError::invalid_grant("the user of this grant no longer exists").into());
    };
    let issue = crate::openid::Issue {
        client,
        user,
        scopes: grant_scopes,
        access_token: &access.token,
        lifetime_seconds: access.expires_in,
        sign_in,
    };
    Ok(Some(crate::openid::id_token(cx.keys, cx.issuer, &issue)?))
}

/// Whether this client gets refresh tokens: it registered the `refresh_token` grant type.
pub fn may_refresh(client: &Client) -> bool {
    client.has_grant("refresh_token")
}

/// A required parameter.
pub fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, OAuthError> {
    params.get(name).ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
}
