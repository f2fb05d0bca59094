//! Protocol rules with no I/O: parameter parsing, PKCE, redirect URIs, resource indicators,
//! scopes, client authentication, client metadata, secrets. Pure functions, unit-tested here.
//! The bottom layer: imports nothing of Tessera outside `oauth/`.

pub mod client_auth;
pub mod error;
pub mod params;
pub mod pkce;
pub mod redirect_uri;
pub mod registration;
pub mod resource;
pub mod scope;
pub mod secret;
pub mod totp;

pub use error::{ErrorCode, OAuthError};
