//! Discovery (RFC 8414) and the JWKS (RFC 7517). Both are public, cacheable, and readable
//! cross-origin because browser-based MCP clients fetch them.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::RegistrationPolicy;
use crate::resources::ResourceSet;
use crate::state::{AppState, ServerSettings};

/// Both documents may be cached for 5 minutes (the JWKS no longer than a rotation's delay,
/// see `state::JWKS_MAX_AGE`).
const CACHE_FIVE_MINUTES: HeaderValue = HeaderValue::from_static("public, max-age=300");
const _: () = assert!(crate::state::JWKS_MAX_AGE.as_secs() == 300);

/// The authorization server metadata document. It lists only what works.
pub fn document(settings: &ServerSettings, resources: &ResourceSet) -> Bytes {
    let issuer = &settings.issuer;
    let mut doc = json!({
        "issuer": issuer.as_str(),
        "authorization_endpoint": issuer.join("/authorize"),
        "token_endpoint": issuer.join("/token"),
        "jwks_uri": issuer.join("/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint": issuer.join("/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint": issuer.join("/revoke"),
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": resources.scopes_supported(),
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
    });
    if settings.registration != RegistrationPolicy::Closed {
        doc["registration_endpoint"] = json!(issuer.join("/register"));
    }
    serde_json::to_vec(&doc).unwrap_or_default().into()
}

fn cacheable_json(body: Bytes) -> Response {
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, CACHE_FIVE_MINUTES);
    res
}

pub async fn metadata(State(state): State<AppState>) -> Response {
    cacheable_json(state.metadata.load().as_ref().clone())
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    cacheable_json(state.keys.jwks())
}
