//! Errors that become HTTP responses: RFC 6749 §5.2-shaped JSON for the protocol endpoints. The
//! domain's errors are turned into answers here, once.
//!
//! A 5xx is logged in full here and answered with a bare `server_error`: the body never carries
//! SQL, file paths or upstream errors.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::oauth::{ErrorCode, OAuthError};

/// An error answered as `{"error": code, "error_description": description}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: Cow<'static, str>,
    /// `WWW-Authenticate` challenge for 401 answers.
    pub challenge: Option<&'static str>,
    /// `Retry-After` seconds for 429 answers.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    error_description: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Self { status, code, description: description.into(), challenge: None, retry_after: None }
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(wait: std::time::Duration) -> Self {
        let secs = crate::platform::rate_limit::retry_after_secs(wait);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            format!("too many requests; retry after {secs} seconds"),
        );
        e.retry_after = Some(secs);
        e
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "there is no such endpoint")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not accept this HTTP method",
        )
    }

    /// Log the cause in full, answer with a bare `server_error`.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the server could not complete the request")
    }

    /// The database (or another dependency) is unreachable: 503, so callers retry rather than trust a false answer.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the server is temporarily unable to handle the request",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.code, error_description: &self.description };
        let mut res = super::headers::no_store((self.status, Json(body)));
        if let Some(challenge) = self.challenge {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<sqlx::Error> for ApiError {
    /// The database being unreachable (or refusing connections) is a 503, so clients retry; a
    /// failing statement is a bug: 500.
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) { Self::unavailable(e) } else { Self::internal(e) }
    }
}

/// Whether a database error means "cannot reach the database now" rather than "this statement failed".
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57: operator intervention
            // (shutdown, cannot connect now); 3D000: the database does not exist; 28: refused login;
            // 55000: the database is not accepting connections (ALLOW_CONNECTIONS false).
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "3D000"
                || code.starts_with("28")
                || code == "55000"
        }),
        _ => false,
    }
}

impl From<OAuthError> for ApiError {
    /// RFC 6749 §5.2: 400, except `invalid_client` (401 with a Basic challenge) and the 5xx codes.
    fn from(e: OAuthError) -> Self {
        let status = match e.code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut api = Self::new(status, e.code.as_str(), e.description);
        if e.code == ErrorCode::InvalidClient {
            api.challenge = Some("Basic realm=\"tessera\"");
        }
        api
    }
}
