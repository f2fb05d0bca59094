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

/// An answer that carries a token or a secret: `Cache-Control: no-store` and `Pragma: no-cache`
/// (RFC 6749 §5.1), so no cache on the way keeps it.
pub fn no_store(answer: impl axum::response::IntoResponse) -> axum::response::Response {
    let mut res = answer.into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// What an `Authorization` header presents as a bearer token (RFC 6750 §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization` header.
    Absent,
    /// `Bearer <token>`, the token trimmed and not empty.
    Token(&'a str),
    /// Another scheme, an empty token, or a value that is not text.
    Malformed,
}

impl<'a> Bearer<'a> {
    pub fn from_headers(headers: &'a HeaderMap) -> Self {
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Self::Absent };
        let token = value.to_str().ok().and_then(|v| v.split_once(' ')).and_then(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
        });
        token.map_or(Self::Malformed, Self::Token)
    }

    /// The token, if one was presented well formed.
    pub fn token(self) -> Option<&'a str> {
        match self {
            Self::Token(token) => Some(token),
            Self::Absent | Self::Malformed => None,
        }
    }
}
