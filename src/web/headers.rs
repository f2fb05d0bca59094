//! Security headers on every response (DESIGN.md "Security defaults"), set from static values.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// Pages use one stylesheet from `/static` and no script; nothing may frame them.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'";

const COOP: HeaderName = HeaderName::from_static("cross-origin-opener-policy");

/// Set the security headers. A handler may have set its own `Cache-Control` (metadata is
/// cacheable); everything else defaults to `no-store`, because tokens and secrets must never be
/// cached.
pub fn apply(headers: &mut HeaderMap, https: bool) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(COOP, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if https {
        headers
            .insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=63072000; includeSubDomains"));
    }
}
