//! Discovery (RFC 8414, the document from `discovery`) and the JWKS (RFC 7517). Both are
//! public, cacheable, and readable cross-origin because browser-based MCP clients fetch them.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Both documents may be cached for 5 minutes (the JWKS no longer than a rotation's delay,
/// see `keys::JWKS_MAX_AGE`).
const CACHE_FIVE_MINUTES: HeaderValue = HeaderValue::from_static("public, max-age=300");
const _: () = assert!(crate::tokens::keys::JWKS_MAX_AGE.as_secs() == 300);

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
