//! Discovery (RFC 8414) and the JWKS (RFC 7517). Both are public, cacheable, and readable
//! cross-origin because browser-based MCP clients fetch them.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::Issuer;
use crate::state::{AppState, JWKS_MAX_AGE};

/// How long clients may cache the metadata document.
const METADATA_MAX_AGE: u64 = 3600;

/// The authorization server metadata document. It lists only what works.
pub fn document(issuer: &Issuer) -> Bytes {
    let doc = json!({
        "issuer": issuer.as_str(),
        "jwks_uri": issuer.join("/jwks.json"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
    });
    serde_json::to_vec(&doc).unwrap_or_default().into()
}

fn cacheable_json(body: Bytes, max_age: u64) -> Response {
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    res
}

pub async fn metadata(State(state): State<AppState>) -> Response {
    cacheable_json(state.metadata.clone(), METADATA_MAX_AGE)
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    cacheable_json(state.keys.jwks(), JWKS_MAX_AGE.as_secs())
}
